"""How a fork-hazard report reads: its summary line, the report, and the advice it ends with.

Functions of a :class:`~forksafe_logging.Diagnosis`, which calls them for its
:attr:`~forksafe_logging.Diagnosis.summary`, :meth:`~forksafe_logging.Diagnosis.report`
and :meth:`~forksafe_logging.Diagnosis.advice`.
"""

from __future__ import annotations

from forksafe_logging._hazard import KINDS, fill

TYPE_CHECKING = False  # typing is not imported at run time: see _compat
if TYPE_CHECKING:
    from typing import Optional, Tuple

    from forksafe_logging._diagnosis import Diagnosis
    from forksafe_logging._hazard import Hazard


def summary(d: Diagnosis) -> str:
    """One line: how many hazards, how many ``install()`` covers, which it does not."""
    if not d.hazards:
        return "No fork hazards found."
    latent = d.latent
    present = tuple(h for h in d.hazards if not h.needs_thread or not latent)
    if not present:
        count = len(latent)
        return (
            "No fork hazard at this moment: no other thread runs. %s listed would be "
            "one%s if another thread used logging during a fork (%s)."
            % (
                "The one" if count == 1 else "The %d" % count,
                "" if count == 1 else " each",
                _count(d, latent).split("; ", 1)[1],
            )
        )
    text = _count(d, present)
    if latent:
        text += "; %d more only if another thread used logging during a fork" % len(latent)
    return text + "."


def _count(d: Diagnosis, hazards: Tuple[Hazard, ...]) -> str:
    count = len(hazards)
    found = "%d fork hazard%s" % (count, "" if count == 1 else "s")
    mode = 'install(child="%s")' % d.mode
    uncovered = [h for h in hazards if not h.covered]
    if not uncovered:
        return "%s; %s covers %s" % (found, mode, "it" if count == 1 else "all of them")
    return "%s; %s covers %d, not: %s" % (
        found,
        mode,
        count - len(uncovered),
        ", ".join(sorted({h.kind for h in uncovered}, key=KINDS.index)),
    )


def advice(d: Diagnosis, fork_at: Optional[str] = None) -> str:
    """What to do, in a few lines: the lines to add, and where.

    ``fork_at`` names the program's first fork (``"app.py, line 12"``),
    if known: ``install()`` goes before it.

    .. versionadded:: 0.4.0
    """
    uncovered = d.uncovered
    # Children that are not forked from here get this process's handlers
    # in "forward" mode only, and only once install() is active.
    lost = d.start_method != "fork" and (d.mode != "forward" or not d.installed)
    if d.installed:
        return _advice_installed(d, lost)
    if not d.hazards and not lost:
        return "What to do: nothing for now; no fork would copy anything unsafely."
    latent_ids = {id(h) for h in d.latent}
    covered = [h for h in d.hazards if h.covered]
    why = []
    if any(id(h) not in latent_ids for h in covered):
        why.append("to cover the hazards above")
    elif covered:
        why.append("so that a fork stays safe once other threads log")
    call = "forksafe_logging.install()"
    if lost:
        why.append(
            "so that what children started with %s log reaches these handlers" % d.start_method
        )
    elif d.mode != "forward":
        call = 'forksafe_logging.install(child="%s")' % d.mode
    if not why:
        return fill(
            "What to do: install() does not cover what is listed; see the entries "
            'marked "Not covered by install()" above.'
        )
    where = "before %s (the first fork)" % fork_at if fork_at else "before the program's first fork"
    text = fill("What to do: add these two lines %s, %s:" % (where, " and ".join(why)))
    text += "\n\n    import forksafe_logging\n    %s" % call
    if uncovered:
        text += '\n\nThen see the entries marked "Not covered by install()" above.'
    return text


def _advice_installed(d: Diagnosis, lost: bool) -> str:
    if lost:
        return fill(
            'What to do: children started with %s get nothing from install(child="%s"); '
            'install(child="forward") sends what they log to these handlers.'
            % (d.start_method, d.mode)
        )
    if d.uncovered:
        return fill(
            "What to do: install() is active; see the entries marked "
            '"Not covered by install()" above.'
        )
    if not d.hazards:
        return "What to do: nothing; install() is active."
    return "What to do: nothing; install() is active and covers what is listed."


def report(d: Diagnosis, fork_at: Optional[str] = None) -> str:
    """The report, ending with :meth:`advice` (given ``fork_at``)."""
    lines = ["Fork hazards in process %d (Python %s)" % (d.pid, d.python)]
    options = 'child="%s", fork_timeout=%s' % (d.mode, d.fork_timeout)
    if d.installed:
        lines.append("install() is active (%s)." % options)
    else:
        lines.append(
            fill("install() is not active; the remedies are what install(%s) would do." % options)
        )
    if d.start_method != "fork" and d.mode != "forward":
        lines.append(
            fill(
                'multiprocessing starts its children with "%s" here%s: they are not '
                'forked from this process, so install(child="%s") does nothing for them, '
                "and what they log is lost unless they configure logging themselves "
                "(from Python 3.14, a forkserver child has what the main module sets up "
                "when imported, install() included). "
                'child="forward" covers every start method.'
                % (
                    d.start_method,
                    " (this Python's default)" if d.start_method_is_default else "",
                    d.mode,
                )
            )
        )
    elif d.start_method != "fork" and not d.installed:
        lines.append(
            fill(
                'multiprocessing starts its children with "%s" here%s: they are not '
                "forked from this process, and what they log does not reach its handlers "
                "unless they configure logging themselves; install() sends it there."
                % (
                    d.start_method,
                    " (this Python's default)" if d.start_method_is_default else "",
                )
            )
        )
    latent = d.latent
    latent_ids = {id(h) for h in latent}
    ordered = [h for h in d.hazards if id(h) not in latent_ids] + list(latent)
    for number, hazard in enumerate(ordered, 1):
        lines.append("")
        if latent and hazard is latent[0]:
            lines.append(
                fill(
                    "Only if another thread used logging during a fork (none runs "
                    "now, so a fork at this moment copies these safely):"
                )
            )
            lines.append("")
        lines.append(fill("%d. [%s] %s" % (number, hazard.kind, hazard.where), "   "))
        lines.append(fill("At a fork: " + hazard.detail, "   ", "   "))
        label = "install()" if hazard.covered else "Not covered by install()"
        lines.append(fill("%s: %s" % (label, hazard.remedy), "   ", "   "))
    lines.append("")
    lines.append(fill(summary(d)))
    lines.append("")
    lines.append(advice(d, fork_at))
    return "\n".join(lines)
