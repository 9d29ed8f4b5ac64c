"""Hot reload: a new config replaces the old only when valid; requests in flight keep theirs."""

from __future__ import annotations

import asyncio

import yaml

from aegis_proxy import LLMTask
from tests.conftest import Rig
from tests.fakeserver import Fault
from tests.logcapture import capture_events

HELLO = [{"role": "user", "content": "Say hi."}]


def _to_cloud(rig: Rig) -> dict[str, object]:
    data = rig.config_data()
    data["routing"]["default"] = ["ollama_cloud"]  # type: ignore[index]
    return data


async def test_reload_applies_to_new_requests_only(rig: Rig) -> None:
    """A request in flight finishes on its config; requests after the reload use the new one."""
    rig.local.add_fault(Fault.delay(0.5))
    async with rig.proxy() as proxy:
        in_flight = asyncio.create_task(proxy.acompletion(HELLO))
        await asyncio.sleep(0.1)
        rig.write_config(_to_cloud(rig))  # type: ignore[arg-type]
        assert proxy.reload() is True
        after = await proxy.acompletion(HELLO)
        before = await in_flight
    assert before.aegis.provider == "local_ollama"
    assert after.aegis.provider == "ollama_cloud"


async def test_broken_file_keeps_old_config(rig: Rig) -> None:
    """A broken file is refused with a logged reason and the running config keeps serving."""
    async with rig.proxy() as proxy:
        path = rig.tmp_path / "aegis.yaml"
        path.write_text("providers: [\n")
        with capture_events() as logs:
            assert proxy.reload() is False
        resp = await proxy.acompletion(HELLO)
    assert resp.aegis.provider == "local_ollama"
    [event] = [e for e in logs if e["event"] == "config_reload_failed"]
    assert event["path"] == str(path)
    assert "YAML syntax error" in event["problem"]


async def test_invalid_config_under_concurrent_requests(rig: Rig) -> None:
    """Reloading an invalid config while 20 requests run leaves all of them served."""
    async with rig.proxy() as proxy:
        tasks = [asyncio.create_task(proxy.acompletion(HELLO)) for _ in range(20)]
        data = rig.config_data()
        data["routing"]["default"] = ["nowhere"]
        (rig.tmp_path / "aegis.yaml").write_text(yaml.safe_dump(data))
        assert proxy.reload() is False
        results = await asyncio.gather(*tasks)
    assert {r.aegis.provider for r in results} == {"local_ollama"}
    assert len(rig.local.chat_requests()) == 20


async def test_unchanged_providers_keep_client_and_breaker(rig: Rig) -> None:
    """A reload reuses the client and breaker of a provider whose config did not change."""
    async with rig.proxy() as proxy:
        await proxy.acompletion(HELLO)
        client, breaker = proxy.clients["local_ollama"], proxy.breakers["local_ollama"]
        rig.write_config(_to_cloud(rig))  # type: ignore[arg-type]
        assert proxy.reload()
        assert proxy.clients["local_ollama"] is client
        assert proxy.breakers["local_ollama"] is breaker


async def test_watch_config_reloads_on_change(rig: Rig) -> None:
    """watch_config notices the file changed and reloads it."""
    async with rig.proxy() as proxy:
        proxy.watch_config(interval_s=0.05)
        await asyncio.sleep(0.1)
        rig.write_config(_to_cloud(rig))  # type: ignore[arg-type]
        for _ in range(40):
            await asyncio.sleep(0.05)
            if proxy.config.routing.default[0].provider == "ollama_cloud":
                break
        resp = await proxy.acompletion(HELLO, LLMTask())
    assert resp.aegis.provider == "ollama_cloud"
