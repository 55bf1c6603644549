"""gRPC transport of the model-gateway: translates ModelService requests to the gateway and back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from agentflow.common.v1 import common_pb2
from agentflow.models.v1 import models_pb2, models_pb2_grpc
from agentflow_runtime import context
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.protojson import dict_from_struct, struct_from_dict
from typing_extensions import override

from .gateway import CallInfo, CompleteOptions, ModelGateway
from .providers.base import ChatMessage, ToolCall, ToolSpec, Usage

Ctx = grpc.aio.ServicerContext[Any, Any]

_ROLES = {
    models_pb2.ROLE_SYSTEM: "system",
    models_pb2.ROLE_USER: "user",
    models_pb2.ROLE_ASSISTANT: "assistant",
    models_pb2.ROLE_TOOL: "tool",
}


def _messages(messages: Sequence[models_pb2.Message]) -> list[ChatMessage]:
    return [
        ChatMessage(
            _ROLES.get(m.role, "unspecified"),
            m.content,
            tuple(ToolCall(c.id, c.name, dict_from_struct(c.arguments)) for c in m.tool_calls),
            m.tool_call_id,
        )
        for m in messages
    ]


def _tools(tools: Sequence[models_pb2.ToolDefinition]) -> tuple[ToolSpec, ...]:
    return tuple(ToolSpec(t.name, t.description, dict_from_struct(t.parameters)) for t in tools)


def _tool_calls(calls: Sequence[ToolCall]) -> list[models_pb2.ToolCall]:
    return [models_pb2.ToolCall(id=c.id, name=c.name, arguments=struct_from_dict(c.arguments)) for c in calls]


def _usage(usage: Usage) -> common_pb2.TokenUsage:
    return common_pb2.TokenUsage(
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, total_tokens=usage.total_tokens
    )


class ModelServicer(models_pb2_grpc.ModelServiceServicer):
    """ModelService over a `ModelGateway`; usage is attributed to the caller's tenant."""

    def __init__(self, gateway: ModelGateway, audit: AuditSink) -> None:
        self._gateway = gateway
        self._audit = audit

    @override
    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context_: Ctx
    ) -> models_pb2.ListModelsResponse:
        return models_pb2.ListModelsResponse(
            models=[
                models_pb2.Model(
                    name=f"models/{m.alias}",
                    provider=m.provider,
                    provider_model=m.provider_model,
                    input_price_per_mtok=m.input_price_per_mtok,
                    output_price_per_mtok=m.output_price_per_mtok,
                )
                for m in self._gateway.models
            ]
        )

    @override
    async def Complete(
        self, request: models_pb2.CompleteRequest, context_: Ctx
    ) -> models_pb2.CompleteResponse:
        call = CallInfo(context.current().tenant, request.run, request.step_id, request.idempotency_key)
        options = CompleteOptions(
            max_tokens=request.max_tokens or None,
            temperature=request.temperature or None,
            tools=_tools(request.tools),
            agent=request.agent,
        )
        result = await self._gateway.complete(request.model, _messages(request.messages), call, options)
        if not result.replayed:
            details = {"run": request.run, "step_id": request.step_id, "cost_usd": result.cost_usd}
            self._audit.record("model.complete", result.model, details=details)
        return models_pb2.CompleteResponse(
            model=result.model,
            message=models_pb2.Message(
                role=models_pb2.ROLE_ASSISTANT, content=result.text, tool_calls=_tool_calls(result.tool_calls)
            ),
            finish_reason=result.finish_reason,
            usage=_usage(result.usage),
            cost_usd=result.cost_usd,
            replayed=result.replayed,
        )

    @override
    async def StreamComplete(
        self, request: models_pb2.StreamCompleteRequest, context_: Ctx
    ) -> AsyncIterator[models_pb2.StreamCompleteResponse]:
        call = CallInfo(context.current().tenant, request.run, request.step_id)
        events = self._gateway.stream(
            request.model,
            _messages(request.messages),
            call,
            max_tokens=request.max_tokens or None,
            temperature=request.temperature or None,
        )
        async for event in events:
            response = models_pb2.StreamCompleteResponse(delta=event.delta, finish_reason=event.finish_reason)
            if event.usage is not None:
                response.usage.CopyFrom(_usage(event.usage))
                response.cost_usd = event.cost_usd
                details = {"run": request.run, "step_id": request.step_id, "cost_usd": event.cost_usd}
                self._audit.record("model.stream_complete", request.model, details=details)
            yield response

    @override
    async def Embed(self, request: models_pb2.EmbedRequest, context_: Ctx) -> models_pb2.EmbedResponse:
        embeddings = await self._gateway.embed(
            request.model, list(request.texts), CallInfo(context.current().tenant)
        )
        return models_pb2.EmbedResponse(
            embeddings=[models_pb2.Embedding(values=vector) for vector in embeddings.vectors],
            usage=_usage(embeddings.usage),
        )
