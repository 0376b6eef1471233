"""A simple-chat front end's server side, as they are written: one app
holding one token, serving many people, naming each by `user_id`, and
reading `/api/chat/stream?format=message` with httpx-sse as a stream
from an sse-starlette server is read.

Usage: python simple_chat.py BASE_URL TOKEN USER [USER ...]
Prints one JSON object: for each user, what each of their two messages
streamed, their status, and what another user's request looks like to
them.
"""

import json
import sys

import httpx
from httpx_sse import connect_sse

base, token, *users = sys.argv[1:]
client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=20)


def chat(user, message, conversation_id=None):
    """One streamed answer: the tokens, and how it ended."""
    body = {"message": message, "user_id": user, "priority": 3}
    if conversation_id:
        body["conversation_id"] = conversation_id
    tokens, end = [], None
    with connect_sse(client, "POST", "/api/chat/stream?format=message", json=body) as source:
        source.response.raise_for_status()
        for event in source.iter_sse():
            if event.event == "message":
                tokens.append(event.data)
            elif event.event == "done":
                end = {"done": json.loads(event.data)}
                break
            elif event.event == "error":
                end = {"error": event.data}
                break
    return {"text": "".join(tokens), "tokens": len(tokens), "end": end}


out = {}
for user in users:
    first = chat(user, f"Hello from {user}")
    conversation = first["end"]["done"]["conversation_id"]
    second = chat(user, f"And again from {user}", conversation)
    status = client.get("/api/status", headers={"X-Switchyard-End-User": user}).json()
    out[user] = {"first": first, "second": second, "status": status}

# Each user's requests are theirs alone: another user asking after one is
# told there is no such request.
if len(users) > 1:
    theirs = out[users[0]]["first"]["end"]["done"]["request_id"]
    answer = client.post("/api/queue/status", json={"request_id": theirs, "user_id": users[1]})
    out["other_user_asks"] = {"status": answer.status_code, "body": answer.json()}
    mine = client.post("/api/queue/status", json={"request_id": theirs, "user_id": users[0]})
    out["owner_asks"] = {"status": mine.status_code, "body": mine.json()}

print(json.dumps(out))
