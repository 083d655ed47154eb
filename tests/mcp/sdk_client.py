"""Drives fvtt-relay's /mcp with the official Python SDK (`mcp` on PyPI).

Usage: python sdk_client.py URL KEY READER_KEY CLIENT_ID
Prints one JSON object per line; tests/mcp.rs reads them and drives the world in between.
"""

import json
import warnings
import sys

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

URL, KEY, READER_KEY, CLIENT_ID = sys.argv[1:5]
# resources/subscribe is what 2025-11-25, the revision negotiated here, offers.
warnings.filterwarnings("ignore", message="resources/subscribe")


def say(**o):
    print(json.dumps(o), flush=True)


def method_and_params(message):
    for obj in (message, getattr(message, "root", None)):
        method = getattr(obj, "method", None)
        if method:
            return method, getattr(obj, "params", None)
    return None, None


async def session(key, seen, box):
    async def on_response(resp):
        sid = resp.headers.get("mcp-session-id")
        if sid:
            box["sid"] = sid

    async def handler(message):
        method, params = method_and_params(message)
        if method == "notifications/resources/updated":
            await seen.send(str(params.uri))

    client = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key}"},
        event_hooks={"response": [on_response]},
        timeout=30,
    )
    return client, handler


def text_of(result):
    return result.content[0].text if result.content else ""


async def main():
    send, recv = anyio.create_memory_object_stream(10)
    box = {}
    http, handler = await session(KEY, send, box)
    async with http, streamable_http_client(URL, http_client=http) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write, message_handler=handler) as s:
            init = await s.initialize()
            say(step="init", version=init.protocol_version, session=box.get("sid"),
                server=init.server_info.name)
            tools = await s.list_tools()
            say(step="tools", names=[t.name for t in tools.tools])
            res = await s.list_resources()
            say(step="resources", uris=[str(r.uri) for r in res.resources])
            prompts = await s.list_prompts()
            p = await s.get_prompt("session_summary", {})
            say(step="prompts", names=[x.name for x in prompts.prompts], text=p.messages[0].content.text)
            roll = await s.call_tool("roll_dice", {"formula": "1d20"})
            total = ((roll.structured_content or {}).get("data") or {}).get("roll", {}).get("total")
            say(step="roll", isError=bool(roll.is_error), total=total)
            ent = await s.call_tool("get_entity", {"uuid": "Actor.V5OF1QXHjaIy6iO8"})
            name = ((ent.structured_content or {}).get("data") or {}).get("name")
            say(step="read", isError=bool(ent.is_error), name=name)
            sent = await s.call_tool("send_chat", {"content": "hello from the Python SDK"})
            say(step="write", isError=bool(sent.is_error), text=text_of(sent))
            ticks = []

            async def on_progress(progress, total, message):
                ticks.append(progress)

            listed = await s.call_tool("list_encounters", {}, progress_callback=on_progress)
            say(step="progress", isError=bool(listed.is_error), progress=len(ticks))

            uri = f"foundry://worlds/{CLIENT_ID}/chat"
            await s.subscribe_resource(uri)
            say(step="subscribed", uri=uri)
            got = None
            with anyio.move_on_after(10):
                got = await recv.receive()
            say(step="updated", uri=got)
            r = await s.read_resource(uri)
            say(step="resource", uri=str(r.contents[0].uri), hasMessages="messages" in r.contents[0].text)

            rs, rr = anyio.create_memory_object_stream(1)
            rhttp, rhandler = await session(READER_KEY, rs, {})
            async with rhttp, streamable_http_client(URL, http_client=rhttp) as rstreams:
                async with ClientSession(rstreams[0], rstreams[1], message_handler=rhandler) as rsess:
                    await rsess.initialize()
                    refused = await rsess.call_tool("roll_dice", {"formula": "1d4"})
                    say(step="scope", isError=bool(refused.is_error), text=text_of(refused))

            say(step="offline_call")
            off = await s.call_tool("world_info", {})
            say(step="offline", isError=bool(off.is_error), text=text_of(off))
    # Leaving the transport's context sent DELETE: the session is gone.
    async with httpx2.AsyncClient(timeout=10) as h:
        after = await h.post(URL, headers={
            "Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream", "Mcp-Session-Id": box.get("sid", ""),
            "MCP-Protocol-Version": "2025-11-25"},
            content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        say(step="ended", status=after.status_code)
    say(step="done")


try:
    anyio.run(main)
except BaseException as e:  # noqa: BLE001 - report anything to the Rust side
    import traceback
    say(step="error", message="".join(traceback.format_exception(e)))
    sys.exit(1)
