"""A local body-based router: one endpoint in front of several model servers.

Like llm-d's body-based routing (BBR copies the body's `model` into X-Gateway-Model-Name, and
a route per model picks the backend), it reads the JSON body's `model`, forwards the request
to that model's server and streams the answer back. GET /v1/models merges every server's list;
an unknown model gets a 404 like a gateway with no matching route.
"""
from __future__ import annotations

import asyncio
import json
import threading

import aiohttp
from aiohttp import web

from lightrail.testing.vllm import free_port

MODEL_HEADER = "X-Gateway-Model-Name"


class BodyRouter:
    """`with BodyRouter({"org/a": "http://127.0.0.1:1234", ...}) as router: router.url`"""

    def __init__(self, backends: dict[str, str]):
        self.backends = dict(backends)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _models(self, request: web.Request) -> web.Response:
        data = []
        async with aiohttp.ClientSession() as session:
            for base in dict.fromkeys(self.backends.values()):
                async with session.get(f"{base}/v1/models") as resp:
                    data += (await resp.json()).get("data", [])
        return web.json_response({"object": "list", "data": data})

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            model = json.loads(body).get("model")
        except ValueError:
            return web.json_response({"error": {"message": "request body is not JSON"}}, status=400)
        base = self.backends.get(model)
        if base is None:
            return web.json_response({"error": {"message": f"no route for model {model!r}"}}, status=404)
        headers = {"Content-Type": "application/json", MODEL_HEADER: model}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            async with session.post(f"{base}{request.path}", data=body, headers=headers) as upstream:
                response = web.StreamResponse(status=upstream.status,
                                              headers={"Content-Type": upstream.headers.get("Content-Type", "")})
                await response.prepare(request)
                try:
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                except ConnectionResetError:   # the client hung up; leaving closes the upstream request too
                    pass
                return response

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> "BodyRouter":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._runner and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "BodyRouter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
