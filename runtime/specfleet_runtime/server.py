"""The replica's HTTP surface (DESIGN.md §3): OpenAI API, health, metrics, admin (on the
serving port, or on a port of its own: `create_admin_app`).

The engine runs its own thread and calls back from it; each request gets an asyncio.Queue
fed through `loop.call_soon_threadsafe`, so the event loop never blocks on the engine and a
slow or vanished client never blocks the engine. Every request is validated before it
reaches the engine: a bad request is answered here and never touches the batch in flight.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, AsyncIterator, Iterable

from fastapi import FastAPI, HTTPException, Request
from jinja2 import TemplateError
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from specfleet_runtime import openai_api as oa
from specfleet_runtime.admin import admin_router
from specfleet_runtime.engine.api import ForwardTiming, RequestOutput, SamplingParams
from specfleet_runtime.errors import describe, error_response
from specfleet_runtime.metrics import RequestTimer, RuntimeMetrics

if TYPE_CHECKING:
    from specfleet_runtime.engine.engine import Engine

SSE_MEDIA_TYPE = "text/event-stream"
ERROR_RESPONSES = {code: {"model": oa.ErrorResponse} for code in (400, 404, 422, 503)}
# With "stream": true the 200 is server-sent events: `data: <chunk JSON>` lines, then `data: [DONE]`.
STREAMING_RESPONSES = {**ERROR_RESPONSES, 200: {"content": {SSE_MEDIA_TYPE: {"schema": {"type": "string"}}}}}


class RuntimeState:
    """What the routes share. The engine is attached once its weights are loaded, so the
    server can answer /health (503) while a large model is still loading."""

    def __init__(self, served_model_name: str, metrics: RuntimeMetrics) -> None:
        self.served_model_name = served_model_name
        self.metrics = metrics
        self.engine: Engine | None = None

    def attach(self, engine: "Engine", calibration: Iterable[ForwardTiming] = ()) -> None:
        self.metrics.follow_engine(lambda: engine.num_running, lambda: engine.num_waiting, lambda: engine.speculation)
        self.metrics.set_calibration(calibration)
        self.engine = engine

    def require_engine(self) -> "Engine":
        if self.engine is None:
            raise HTTPException(503, "the model is still loading")
        return self.engine


def create_app(
    engine: "Engine | None" = None,
    *,
    admin_token: str | None,
    served_model_name: str | None = None,
    metrics: RuntimeMetrics | None = None,
    calibration: Iterable[ForwardTiming] = (),
    include_admin: bool = True,
) -> FastAPI:
    """The app for one replica. Pass the engine now, or later via `app.state.runtime.attach`.

    `metrics` must be the StepObserver the engine was built with (Engine.from_config's
    `observer`), or engine-step series stay empty; it defaults to a fresh registry.
    `include_admin=False` leaves the admin API out (404 here), for a replica that serves it
    on a port of its own with `create_admin_app`.
    """
    name = served_model_name or (engine.model_name if engine is not None else None)
    if not name:
        raise ValueError("served_model_name is required when no engine is given")
    state = RuntimeState(name, metrics or RuntimeMetrics(name))
    if engine is not None:
        state.attach(engine, calibration)

    app = FastAPI(title="specfleet runtime", version="0.1.0")
    app.state.runtime = state
    _install_error_handlers(app)
    if include_admin:
        _include_admin(app, state, admin_token)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.engine is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", response_class=Response)
    async def metrics_endpoint() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=oa.ModelList)
    async def list_models() -> oa.ModelList:
        engine = state.require_engine()
        card = oa.ModelCard(id=state.served_model_name, created=oa.now(), max_model_len=engine.max_model_len)
        return oa.ModelList(data=[card])

    @app.post("/v1/completions", response_model=oa.CompletionResponse, responses=STREAMING_RESPONSES)
    async def completions(body: oa.CompletionRequest, request: Request) -> Response:
        engine = _engine_for(state, body.model)
        prompt = body.single_prompt()
        prompt_ids = engine.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        run = _Run.submit(state, engine, prompt_ids, body, body.max_tokens)
        header = dict(id=oa.new_id("cmpl"), created=oa.now(), model=state.served_model_name)
        if body.stream:
            return _sse(_completion_chunks(run, header, body.include_usage_chunk), run)
        text, finish = await run.collect(request)
        choice = oa.CompletionChoice(text=text, finish_reason=finish)
        return JSONResponse(oa.CompletionResponse(**header, choices=[choice], usage=run.usage()).model_dump(mode="json"))

    @app.post("/v1/chat/completions", response_model=oa.ChatCompletionResponse, responses=STREAMING_RESPONSES)
    async def chat_completions(body: oa.ChatCompletionRequest, request: Request) -> Response:
        engine = _engine_for(state, body.model)
        try:
            prompt = engine.tokenizer.apply_chat_template(body.plain_messages())
        except TemplateError as exc:  # templates reject some conversations (raise_exception)
            raise HTTPException(400, f"messages: the model's chat template rejected them: {exc}") from exc
        prompt_ids = engine.tokenizer.encode(prompt)
        run = _Run.submit(state, engine, prompt_ids, body, body.requested_max_tokens())
        header = dict(id=oa.new_id("chatcmpl"), created=oa.now(), model=state.served_model_name)
        if body.stream:
            return _sse(_chat_chunks(run, header, body.include_usage_chunk), run)
        text, finish = await run.collect(request)
        choice = oa.ChatChoice(message=oa.AssistantMessage(content=text), finish_reason=finish)
        return JSONResponse(oa.ChatCompletionResponse(**header, choices=[choice], usage=run.usage()).model_dump(mode="json"))

    return app


def create_admin_app(state: RuntimeState, admin_token: str | None) -> FastAPI:
    """The admin API alone, sharing `state` with the replica's app: what `specfleet serve
    --admin-port` serves there, so a NetworkPolicy can admit that port to the operator only."""
    app = FastAPI(title="specfleet runtime admin", version="0.1.0")
    app.state.runtime = state
    _install_error_handlers(app)
    _include_admin(app, state, admin_token)
    return app


def _include_admin(app: FastAPI, state: RuntimeState, admin_token: str | None) -> None:
    app.include_router(admin_router(state, admin_token), responses={401: {"model": oa.ErrorResponse}})


def _engine_for(state: RuntimeState, model: str) -> "Engine":
    engine = state.require_engine()
    if model != state.served_model_name:
        raise HTTPException(404, f"model {model!r} not found; this replica serves {state.served_model_name!r}")
    return engine


class _Run:
    """One request in the engine: its event queue, token counts, and abort-on-exit."""

    def __init__(self, engine: "Engine", queue: asyncio.Queue[RequestOutput], prompt_tokens: int) -> None:
        self.engine = engine
        self.queue = queue
        self.request_id: str | None = None
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finished = False

    @classmethod
    def submit(
        cls, state: RuntimeState, engine: "Engine", prompt_ids: list[int], body: oa._SamplingFields,
        max_tokens: int | None,
    ) -> "_Run":
        # Output is capped by what fits in max_model_len (finish_reason "length" says so);
        # a prompt that leaves no room at all is the engine's PromptTooLongError below.
        room = max(1, engine.max_model_len - len(prompt_ids))
        params: SamplingParams = body.sampling_params(min(max_tokens or room, room))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
        timer: RequestTimer = state.metrics.request_timer()

        def on_output(output: RequestOutput) -> None:  # runs on the engine thread
            timer.on_output(output)
            try:
                loop.call_soon_threadsafe(queue.put_nowait, output)
            except RuntimeError:  # the event loop is gone (server shut down): nobody listens
                pass

        run = cls(engine, queue, len(prompt_ids))
        try:
            run.request_id = engine.add_request(prompt_ids, params, on_output)
        except ValueError as exc:  # PromptTooLongError, empty prompt, token id outside the vocabulary
            raise HTTPException(400, str(exc)) from exc
        return run

    def _record(self, output: RequestOutput) -> RequestOutput:
        self.completion_tokens = output.completion_tokens or self.completion_tokens + len(output.new_token_ids)
        self.prompt_tokens = output.prompt_tokens or self.prompt_tokens
        self.finished = output.finished
        return output

    async def events(self) -> AsyncIterator[RequestOutput]:
        while not self.finished:
            yield self._record(await self.queue.get())

    async def collect(self, request: Request) -> tuple[str, oa.OpenAIFinish | None]:
        """The whole completion. If the client goes away meanwhile the request is aborted
        (the engine then ends it with finish_reason "abort")."""
        watcher = asyncio.create_task(self._abort_on_disconnect(request))
        pieces: list[str] = []
        finish = None
        try:
            async for output in self.events():
                pieces.append(output.new_text)
                finish = output.finish_reason
        finally:
            watcher.cancel()
            self.abort_unless_finished()
        if finish == "abort":  # the client is still here, so the engine gave up on it
            raise HTTPException(503, "the engine aborted this request (shutting down, or a failed step)")
        return "".join(pieces), finish

    async def _abort_on_disconnect(self, request: Request) -> None:
        # The body is already read, so the next ASGI message can only be the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        self.abort_unless_finished()

    def abort_unless_finished(self) -> None:
        if not self.finished and self.request_id is not None:
            self.engine.abort(self.request_id)

    def usage(self) -> oa.Usage:
        return oa.Usage.of(self.prompt_tokens, self.completion_tokens)


def _sse(chunks: AsyncIterator[str], run: _Run) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {chunk}\n\n"
            yield "data: [DONE]\n\n"
        finally:  # also runs when Starlette cancels us because the client disconnected
            run.abort_unless_finished()

    return StreamingResponse(body(), media_type=SSE_MEDIA_TYPE, headers={"Cache-Control": "no-cache"})


async def _completion_chunks(run: _Run, header: dict, include_usage: bool) -> AsyncIterator[str]:
    async for output in run.events():
        if not output.new_text and not output.finished:
            continue
        choice = oa.CompletionChoice(text=output.new_text, finish_reason=output.finish_reason)
        yield oa.CompletionResponse(**header, choices=[choice]).model_dump_json(exclude={"usage"})
    if include_usage:
        yield oa.CompletionResponse(**header, choices=[], usage=run.usage()).model_dump_json()


async def _chat_chunks(run: _Run, header: dict, include_usage: bool) -> AsyncIterator[str]:
    first = oa.ChatChunkChoice(delta=oa.ChatDelta(role="assistant", content=""))
    yield oa.ChatCompletionChunk(**header, choices=[first]).model_dump_json(exclude={"usage"})
    async for output in run.events():
        if not output.new_text and not output.finished:
            continue
        delta = oa.ChatDelta(content=output.new_text) if output.new_text else oa.ChatDelta()
        choice = oa.ChatChunkChoice(delta=delta, finish_reason=output.finish_reason)
        yield oa.ChatCompletionChunk(**header, choices=[choice]).model_dump_json(exclude={"usage"})
    if include_usage:
        yield oa.ChatCompletionChunk(**header, choices=[], usage=run.usage()).model_dump_json()


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe(exc.errors())
        return error_response(422, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))
