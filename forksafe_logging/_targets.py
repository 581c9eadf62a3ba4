"""What a :class:`~forksafe_logging.QueueHandler` is given: its checks and its targets.

Pure: it knows a handler only as ``logging.Handler``, and is told how to
look inside a ``QueueHandler`` (``inner``) rather than importing the class.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional, Sequence, Set, Tuple, Union

    Spec = Union[str, logging.Handler]
    #: For a ``QueueHandler``: the specs it names and the mapping they are
    #: names in (``None``: the same mapping as its own); for any other
    #: handler, ``None``.
    Inner = Callable[[Any], Optional[Tuple[Sequence[Spec], Any]]]


def check_timeout(timeout: Optional[float]) -> Optional[float]:
    """``timeout`` as a float, or ``None``; raise on anything else."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError("timeout must be a number of seconds or None; got %r" % (timeout,))
    if not timeout > 0 or timeout == float("inf"):
        raise ValueError(
            "timeout must be a finite number of seconds > 0, or None; got %r" % (timeout,)
        )
    return float(timeout)


def check_specs(handlers: Any) -> List[Spec]:
    """``handlers`` as a list of handlers and names; raise ``TypeError`` on anything else."""
    if isinstance(handlers, (str, logging.Handler)) or not isinstance(handlers, Iterable):
        specs: List[Any] = [handlers]  # a bad single value is reported below
    else:
        specs = list(handlers)
    for target in specs:
        if not isinstance(target, (str, logging.Handler)):
            raise TypeError(
                "handlers must be logging.Handler objects or names of configured "
                "handlers; got %r" % (target,)
            )
    return specs


def configured(specs: Sequence[Spec], *, required: bool) -> Optional[List[logging.Handler]]:
    """The handlers ``specs`` names, among those configured; ``None`` if some are not.

    ``required``: raise ``ValueError`` instead of returning ``None``.
    """
    found = [
        spec if isinstance(spec, logging.Handler) else logging._handlers.get(spec)  # type: ignore[attr-defined]
        for spec in specs
    ]
    if None not in found:
        return found
    if required:
        missing = [spec for spec, handler in zip(specs, found) if handler is None]
        raise ValueError(
            "QueueHandler: no handler named %s is configured"
            % ", ".join(repr(name) for name in missing)
        )
    return None


def resolve(specs: Sequence[Spec], configured: Any, route: str) -> List[logging.Handler]:
    """The handlers ``specs`` name in ``configured`` (a dictConfig's, once it built them)."""
    targets = []
    for spec in specs:
        found = spec if isinstance(spec, logging.Handler) else configured.get(spec)
        if not isinstance(found, logging.Handler):
            raise ValueError(
                "QueueHandler %r: the dictConfig that made it configured no handler "
                "named %r" % (route, spec)
            )
        targets.append(found)
    return targets


def check_dict_config(
    specs: Sequence[Spec],
    handlers: Any,
    name: Optional[str],
    *,
    sends: bool,
    inner: Inner,
) -> None:
    """Refuse, while ``dictConfig`` makes the handler, a configuration that cannot work.

    ``handlers`` is the running configuration's mapping of handlers, ``name``
    the handler's own name in it, and ``sends`` whether the handler sends to
    a listener in another process (rather than handing records to targets
    here).
    """
    label = "QueueHandler" if name is None else "QueueHandler %r" % name
    if not specs and not sends:
        # In a child, the handler sends under its name to the top's handler
        # of that name, which has the targets: none of its own is fine there.
        raise ValueError(
            '%s: "handlers" is missing or empty, so records given to it would go nowhere '
            "in this process, which runs the listener; name the handlers that should get "
            'them, as in "handlers": ["file"]' % label
        )
    for spec in specs:
        # Only this dictConfig's own: it removed every handler configured before.
        if isinstance(spec, str) and spec not in handlers:
            raise ValueError(
                "%s: no handler named %r in this dictConfig; it configures %s"
                % (label, spec, ", ".join(repr(n) for n in sorted(handlers)) or "none")
            )
    if name is None:
        return
    if name in (spec for spec in specs if isinstance(spec, str)):
        raise ValueError(
            "%s names itself in its handlers: each record would be handed to it again, "
            "forever" % label
        )
    cycle = _way_back(name, specs, handlers, handlers, inner, path=[name], seen=set())
    if cycle is not None:
        raise ValueError(
            "%s: its records would come back to it (%s), forever; a QueueHandler must "
            "not reach itself through the QueueHandlers it names"
            % (label, " -> ".join(repr(n) for n in cycle))
        )


def _way_back(
    name: str,
    specs: Sequence[Spec],
    mapping: Any,
    handlers: Any,
    inner: Inner,
    *,
    path: List[str],
    seen: Set[int],
) -> Optional[List[str]]:
    """The QueueHandlers through which ``specs`` lead back to the one being made as ``name``.

    Names in ``specs`` are looked up in ``mapping``, the configuration of
    the QueueHandler that holds them. Of a cycle, only its member made last
    can see it, the others being made already (dictConfig makes them in name
    order and never defers ours); the one being made is still its
    configuration in ``handlers``, hence the comparison by name.
    """
    for spec in specs:
        if isinstance(spec, str):
            if spec == name and mapping is handlers:
                return [*path, spec]
            target = dict.get(mapping, spec)  # dict's get: no conversion of a config
            label = spec
        else:
            target = spec
            label = spec.name or repr(spec)
        found_inner = inner(target)
        if found_inner is None or id(target) in seen:
            continue
        seen.add(id(target))
        inner_specs, inner_mapping = found_inner
        found = _way_back(
            name,
            inner_specs,
            mapping if inner_mapping is None else inner_mapping,
            handlers,
            inner,
            path=[*path, label],
            seen=seen,
        )
        if found is not None:
            return found
    return None
