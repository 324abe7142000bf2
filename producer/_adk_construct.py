"""ADK models built from JSON values of their declared types, without pydantic validation.

Validating an ADK event costs about 25 µs, most of it in validators of ADK and google-genai
written in Python that pass such values through unchanged. The values the adapter rebuilds
from a stored event, and the patches it wrote itself, are JSON values (``str``, ``int``,
``float``, ``bool``, lists and objects) of the declared field types, so :func:`construct`
builds the models directly. The result is what validation gives: the same values (floats for
float fields, sets for set fields, fresh containers), nested models as model instances, every
default, the same set fields, private attributes and ``model_post_init``. Anything else (enum,
bytes or union-typed fields, constrained fields, a value not of its field's type, a key that
names no field, a class with validators not known to pass such values through) makes it
return None: the caller validates instead.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic
from pydantic_core import PydanticUndefined

try:  # pydantic's private-attribute initialiser, set as model_post_init when no other is
    from pydantic._internal._model_construction import init_private_attributes
except ImportError:  # moved in another pydantic: post-init runs as validation runs it
    init_private_attributes = None  # type: ignore[assignment]

__all__ = ["construct", "convert", "make"]

_M = TypeVar("_M", bound=pydantic.BaseModel)
_Convert = Callable[[Any], Any]

#: Validators (module, qualified name) known to return field-named JSON values unchanged:
#: google-genai's type-mismatch warning, ADK's routing of convenience keywords (which are no
#: field names) and its parsing of auth configs (given here as models already).
_TRANSPARENT_VALIDATORS = frozenset({
    ("google.genai._common", "BaseModel._check_field_type_mismatches"),
    ("google.adk.events.event", "Event._accept_convenience_kwargs"),
    ("google.adk.events.event_actions", "EventActions._parse_auth_configs"),
})
#: Own ``__init__`` methods known to pass non-None field keywords on unchanged.
_TRANSPARENT_INITS = frozenset({("google.genai.types", "Part.__init__")})
_IMMUTABLE = (type(None), str, int, float, bool, tuple, frozenset)


class _Unsupported(Exception):
    """A class, field type or value :func:`construct` does not build (validate instead)."""


def construct(cls: type[_M], data: dict[str, Any]) -> _M | None:
    """``cls`` built from ``data`` (field names to JSON values) as validation builds it, or
    None when a class, field or value is not one this module handles."""
    try:
        return _shape(cls).build(data)  # type: ignore[return-value]
    except _Unsupported:
        return None


def convert(cls: type[pydantic.BaseModel], data: dict[str, Any]) -> dict[str, Any] | None:
    """The values :func:`construct` would give ``cls`` for ``data`` (field names to JSON
    values; fresh containers, nested models built), for :func:`make`; None as there."""
    try:
        return _shape(cls).convert(data)
    except _Unsupported:
        return None


def make(cls: type[_M], values: dict[str, Any], private: dict[str, Any] | None = None
         ) -> _M | None:
    """``cls`` of ``values`` (field names to values already of their fields' types, nested
    models as instances) with ``private`` attributes, as validation builds it; None when the
    class is not one this module handles."""
    try:
        return _shape(cls).make(values, private)  # type: ignore[return-value]
    except _Unsupported:
        return None


class _Shape:
    """How to build one model class: a converter per field, the defaults, the instance hooks."""

    def __init__(self, cls: type[pydantic.BaseModel]) -> None:
        _check_transparent(cls)
        self.cls = cls
        self.new = cls.__new__
        self.fields: dict[str, _Convert] = {}
        self.defaults: dict[str, Any] = {}  # every field in declaration order
        self.factories: list[tuple[str, Callable[[], Any]]] = []
        for name, info in cls.__pydantic_fields__.items():
            if info.metadata or info.validate_default:
                raise _Unsupported(f"{cls.__name__}.{name} is constrained")
            self.fields[name] = _converter(info.annotation)
            self.defaults[name] = None
            if info.default_factory is not None:
                if info.default_factory_takes_validated_data:
                    raise _Unsupported(f"{cls.__name__}.{name} default needs the data")
                self.factories.append((name, info.default_factory))  # type: ignore[arg-type]
            elif info.default is PydanticUndefined or isinstance(info.default, _IMMUTABLE):
                self.defaults[name] = info.default  # a required field must be given
            else:
                raise _Unsupported(f"{cls.__name__}.{name} has a mutable default")
        self.required = {n for n, i in cls.__pydantic_fields__.items() if i.is_required()}
        self.own_init = cls.__init__ is not pydantic.BaseModel.__init__
        self.extra: dict[str, Any] | None = {} if cls.model_config.get("extra") == "allow" \
            else None
        self.post_init = bool(cls.__pydantic_post_init__)
        self.private: dict[str, Any] | None = None  # set directly instead of post-init
        if init_private_attributes is not None and \
                cls.model_post_init is init_private_attributes:
            self.private = {}
            for name, attr in cls.__private_attributes__.items():
                if attr.default_factory is not None or not isinstance(attr.default, _IMMUTABLE):
                    self.private = None
                    break
                if attr.default is not PydanticUndefined:
                    self.private[name] = attr.default
            self.post_init = self.private is None

    def build(self, data: dict[str, Any]) -> pydantic.BaseModel:
        """The model of ``data`` (field names to JSON values), converted field by field."""
        return self.make(self.convert(data))

    def convert(self, data: dict[str, Any]) -> dict[str, Any]:
        """The field values of ``data`` (field names to JSON values), converted."""
        fields = self.fields
        values: dict[str, Any] = {}
        for name, value in data.items():
            convert = fields.get(name)
            if convert is None or (value is None and self.own_init):
                raise _Unsupported(name)  # not a field / dropped by the class's __init__
            values[name] = convert(value)
        return values

    def make(self, given: dict[str, Any], private: dict[str, Any] | None = None
             ) -> pydantic.BaseModel:
        """The model of ``given`` (field names to values already of their fields' types; the
        fields set), with ``private`` attributes laid over the defaults."""
        if self.required and not self.required <= given.keys():
            raise _Unsupported("a required field is missing")
        values = self.defaults.copy()
        for name, factory in self.factories:
            if name not in given:
                values[name] = factory()
        values.update(given)
        model = self.new(self.cls)
        _set_dict(model, values)
        _set_fields_set(model, set(given))
        _set_extra(model, None if self.extra is None else {})
        if self.private is None:
            _set_private(model, None)
            if self.post_init:
                model.model_post_init(None)
            if private:
                for name, value in private.items():
                    setattr(model, name, value)
        else:
            _set_private(model, {**self.private, **private} if private else self.private.copy())
        return model


def _slot_setter(name: str) -> Callable[[Any, Any], None]:
    """The setter of a model instance's ``__dict__`` or one of pydantic's slots, through the
    descriptor itself (no attribute lookup, no model ``__setattr__``)."""
    slot = pydantic.BaseModel.__dict__.get(name)
    if type(slot) in (types.MemberDescriptorType, types.GetSetDescriptorType):
        return slot.__set__  # type: ignore[union-attr,no-any-return]
    return lambda model, value: object.__setattr__(model, name, value)


_set_dict = _slot_setter("__dict__")
_set_fields_set = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")


_SHAPES: dict[type[pydantic.BaseModel], _Shape | None] = {}


def _shape(cls: type[pydantic.BaseModel]) -> _Shape:
    """The shape of ``cls``, made once (also a refusal is remembered)."""
    try:
        shape = _SHAPES[cls]
    except KeyError:
        try:
            shape = _Shape(cls)
        except _Unsupported:
            shape = None
        _SHAPES[cls] = shape
    if shape is None:
        raise _Unsupported(cls.__name__)
    return shape


def _check_transparent(cls: type[pydantic.BaseModel]) -> None:
    if cls.__pydantic_root_model__ or cls.model_config.get("strict"):
        raise _Unsupported(cls.__name__)
    decorators = cls.__pydantic_decorators__
    for group in (decorators.validators, decorators.field_validators,
                  decorators.root_validators, decorators.model_validators):
        for decorator in group.values():
            func = decorator.func
            where = (getattr(func, "__module__", ""), getattr(func, "__qualname__", ""))
            if where not in _TRANSPARENT_VALIDATORS:
                raise _Unsupported(f"{cls.__name__} validator {where[1]}")
    if cls.__init__ is not pydantic.BaseModel.__init__:
        init = cls.__init__
        if (init.__module__, init.__qualname__) not in _TRANSPARENT_INITS:
            raise _Unsupported(f"{cls.__name__}.__init__")
    for name, info in cls.__pydantic_fields__.items():
        alias = info.validation_alias or info.alias
        if alias not in (None, name) and not cls.model_config.get("populate_by_name"):
            raise _Unsupported(f"{cls.__name__}.{name} is validated by its alias only")


# -- converters per field type ----------------------------------------------------------------
def _converter(annotation: Any) -> _Convert:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return _same
    if annotation in (str, bool, int):
        return functools.partial(_exact, annotation)
    if annotation is float:
        return _float
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            return _refuse
        return functools.partial(_optional, _converter(rest[0]))
    if origin is dict and len(args) == 2 and args[0] is str:
        if args[1] is Any:
            return _plain_dict
        return functools.partial(_dict, _converter(args[1]))
    if origin is list and len(args) == 1:
        return functools.partial(_list, _converter(args[0]))
    if origin is set and len(args) == 1:
        return functools.partial(_set, _converter(args[0]))
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return functools.partial(_model, annotation)
    return _refuse


def _same(value: Any) -> Any:
    return value


def _refuse(value: Any) -> Any:
    raise _Unsupported(repr(value)[:40])


def _exact(kind: type, value: Any) -> Any:
    if type(value) is not kind:
        raise _Unsupported(kind.__name__)
    return value


def _float(value: Any) -> float:
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return float(value)
    raise _Unsupported("float")


def _optional(inner: _Convert, value: Any) -> Any:
    return None if value is None else inner(value)


def _plain_dict(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Unsupported("dict")
    return dict(value)


def _dict(inner: _Convert, value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Unsupported("dict")
    return {k: inner(v) for k, v in value.items()}


def _list(inner: _Convert, value: Any) -> list[Any]:
    if type(value) is not list:
        raise _Unsupported("list")
    return [inner(v) for v in value]


def _set(inner: _Convert, value: Any) -> set[Any]:
    if type(value) not in (list, set):
        raise _Unsupported("set")
    return {inner(v) for v in value}


def _model(cls: type[pydantic.BaseModel], value: Any) -> pydantic.BaseModel:
    if type(value) is not dict:
        raise _Unsupported(cls.__name__)
    return _shape(cls).build(value)
