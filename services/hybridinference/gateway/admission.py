"""Judges a parsed chat call against the model it asks for, the same way for both surfaces.

One pass reports every problem: the parser's type errors, the shared checks (messages, tools,
schemas, sampling ranges, the max_tokens cap), fields the model cannot honour (400
``unsupported_parameter``) and top-level fields nobody defines (400 ``unknown_parameter``,
unless the model passes them through). Then it injects the model's output limit as
``default_max_tokens`` for requests that set none.
"""

from __future__ import annotations

from typing import Any

import grpc

from hybridinference.common.chat_features import features_used, unsupported
from hybridinference.common.errors import (
    FieldViolation,
    ServiceError,
    invalid_argument,
    unsupported_parameter,
)
from hybridinference.common.settings import CapabilitySettings
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.validation import Limits, check_chat


def prepare(call: ChatCall, caps: CapabilitySettings | None, limits: Limits) -> None:
    """Raises ServiceError (400) naming every problem; fills in what the call leaves open.
    ``caps``: the model's capabilities, None for a model the router does not know (it will
    answer 404)."""
    declared = caps.max_output_tokens if caps is not None else None
    problems = list(call.problems)
    reported = {p.field for p in problems}
    problems += [
        problem
        for problem in check_chat(
            call.model,
            call.messages,
            call.sampling,
            limits,
            sampling_prefix="sampling." if call.naming.typed else "",
            user=call.user,
            metadata=call.metadata,
            options=call.options,
            declared_output_limit=declared,
        )
        if problem.field not in reported
    ]
    if problems:
        raise invalid_argument(problems)
    _passthrough(call, caps)
    if caps is not None:
        uses = features_used(call.messages, call.sampling, call.options)
        if uses and (refused := unsupported(uses, caps, call.model)):
            raise unsupported_parameter(
                FieldViolation(call.naming(p.field), p.description) for p in refused
            )
    if not call.sampling.HasField("max_tokens"):
        call.sampling.default_max_tokens = limits.tokens_cap(call.model, declared)


def _passthrough(call: ChatCall, caps: CapabilitySettings | None) -> None:
    """Unknown top-level fields go through only when the model's config names them."""
    allowed = set(caps.passthrough_fields) if caps is not None else set()
    extra: dict[str, Any] = (
        dict(call.options.extra_body) if call.options.HasField("extra_body") else {}
    )
    extra.update(call.unknown)
    if not extra:
        return
    refused = sorted(set(extra) - allowed)
    if refused:
        field = call.naming("extra_body") + "." if call.naming.typed else ""
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Unrecognized request argument(s) supplied: {', '.join(refused)}"
            + (
                f" (model {call.model!r} passes through: {', '.join(sorted(allowed))})"
                if allowed
                else ""
            ),
            "unknown_parameter",
            [FieldViolation(f"{field}{name}", "is not a recognised parameter") for name in refused],
        )
    call.options.extra_body.update(call.unknown)
