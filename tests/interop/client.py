#!/usr/bin/env python3
"""A real XMPP client (slixmpp) for pushgate's interop tests.

Each subcommand logs in, does one thing through the XMPP server, prints one JSON
line with the outcome on stdout, and exits. Diagnostics go to stderr.

  register   run an ad-hoc registration command on the push component
             (Tigase, p2 or mod_push_appserver dialect, one or two steps),
             optionally enable push with the result and go offline
  unregister run the dialect's unregister command
  enable     enable push for a node (and secret), then go offline
  hibernate  enable push for a node with XEP-0198 on, then cut the TCP connection
             without closing the stream (the session stays resumable)
  send       send a chat message (or a chat state without body)
  disable    disable push for a node; prints the server's answer
"""
import argparse
import asyncio
import json
import logging
import sys
import uuid
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DATA = "jabber:x:data"
NS_PUSH = "urn:xmpp:push:0"

# (register node, unregister node, field names) per client dialect.
DIALECTS = {
    "tigase": ("register-device", "unregister-device"),
    "p2-fcm": ("register-push-fcm", "unregister-push-fcm"),
    "p2-apns": ("register-push-apns", "unregister-push-apns"),
    "appserver": ("v1-register-push", "v1-unregister-push"),
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, sm=False):
        super().__init__(jid, password)
        self.enable_direct_tls = False
        self.enable_starttls = True
        self.enable_plaintext = True
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        self.plugin["feature_mechanisms"].unencrypted_scram = True
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0004")
        if sm:
            self.register_plugin("xep_0198")
            self.plugin["xep_0198"].allow_resume = True
            self.plugin["xep_0198"].window = 1
        self.ready = asyncio.Event()
        self.failure = None
        self.add_event_handler("session_start", lambda _: self.ready.set())
        self.add_event_handler("failed_auth", self._fail)
        self.add_event_handler("connection_failed", self._fail)

    def _fail(self, event):
        self.failure = event
        self.ready.set()


async def login(args, user, sm=False):
    """Logs in; a failed login has no side effect, so it is tried up to 3 times."""
    name, password = user.split(":", 1)
    failure = None
    for attempt in range(3):
        jid = "%s@%s/%s" % (name, args.domain, "it-" + uuid.uuid4().hex[:6])
        client = Client(jid, password, sm=sm)
        client.connect(args.host, args.port)
        try:
            await asyncio.wait_for(client.ready.wait(), args.timeout)
        except asyncio.TimeoutError:
            client.failure = "timed out after %ss" % args.timeout
        if client.failure is None:
            client.send_presence()
            return client
        failure = client.failure
        log("login of %s failed (attempt %d): %s" % (name, attempt + 1, failure))
        client.abort()
        await asyncio.sleep(0.5)
    raise SystemExit("login of %s failed: %s" % (name, failure))


async def logout(client):
    client.disconnect()
    try:
        await asyncio.wait_for(client.disconnected, 5)
    except asyncio.TimeoutError:
        client.abort()


async def send_iq(client, payload, to=None):
    iq = client.make_iq_set(ito=to)
    iq.append(ET.fromstring(payload))
    log("SEND %s" % iq)
    try:
        reply = await iq.send(timeout=client.args.timeout)
    except IqError as e:
        reply = e.iq
    except IqTimeout:
        raise SystemExit("no reply to %s" % payload[:80])
    log("RECV %s" % reply)
    return reply


def form_xml(fields):
    inner = "".join("<field var='%s'><value>%s</value></field>" % (k, v) for k, v in fields if v is not None)
    return "<x xmlns='%s' type='submit'>%s</x>" % (NS_DATA, inner)


def registration_fields(args):
    if args.dialect == "tigase":
        return [("provider", args.provider), ("device-token", args.token), ("device-second-token", args.voip)]
    if args.dialect.startswith("p2"):
        return [("token", args.token), ("device-id", args.device_id)]
    return [("type", args.provider), ("node", args.device_id), ("token", args.token)]


def result_fields(reply):
    command = reply.xml.find("{%s}command" % NS_COMMANDS)
    if command is None:
        return None, {}
    fields = {}
    x = command.find("{%s}x" % NS_DATA)
    if x is not None:
        for f in x.findall("{%s}field" % NS_DATA):
            v = f.find("{%s}value" % NS_DATA)
            fields[f.get("var")] = v.text if v is not None else ""
    return command, fields


async def run_command(client, args, node, fields):
    """Executes `node`, in one step or two; returns (status, fields, error)."""
    to = args.component
    if args.flow == "two":
        first = await send_iq(client, "<command xmlns='%s' node='%s' action='execute'/>" % (NS_COMMANDS, node), to)
        command, _ = result_fields(first)
        if first["type"] != "result" or command is None or command.get("status") != "executing":
            return "error", {}, str(first)
        session = command.get("sessionid")
        payload = "<command xmlns='%s' node='%s' sessionid='%s' action='complete'>%s</command>" % (
            NS_COMMANDS, node, session, form_xml(fields))
    else:
        payload = "<command xmlns='%s' node='%s' action='execute'>%s</command>" % (NS_COMMANDS, node, form_xml(fields))
    reply = await send_iq(client, payload, to)
    if reply["type"] != "result":
        return "error", {}, str(reply)
    command, values = result_fields(reply)
    return (command.get("status") if command is not None else "none"), values, None


def enable_xml(args, node, secret):
    options = ""
    if secret:
        options = ("<x xmlns='%s' type='submit'><field var='FORM_TYPE'><value>"
                   "http://jabber.org/protocol/pubsub#publish-options</value></field>"
                   "<field var='secret'><value>%s</value></field></x>") % (NS_DATA, secret)
    return "<enable xmlns='%s' jid='%s' node='%s'>%s</enable>" % (NS_PUSH, args.component, node, options)


async def enable(client, args, node, secret):
    reply = await send_iq(client, enable_xml(args, node, secret))
    return reply["type"] == "result"


async def cmd_register(args):
    client = await login(args, args.user)
    register_node, _ = DIALECTS[args.dialect]
    status, fields, error = await run_command(client, args, register_node, registration_fields(args))
    out = {"status": status, "fields": fields, "error": error}
    if status == "completed" and args.enable:
        out["enabled"] = await enable(client, args, fields.get("node"), fields.get("secret"))
    await logout(client)
    return out


async def cmd_unregister(args):
    client = await login(args, args.user)
    _, unregister_node = DIALECTS[args.dialect]
    status, fields, error = await run_command(client, args, unregister_node, registration_fields(args))
    await logout(client)
    return {"status": status, "fields": fields, "error": error}


async def cmd_enable(args):
    client = await login(args, args.user)
    ok = await enable(client, args, args.node, args.secret)
    await logout(client)
    return {"enabled": ok}


async def cmd_hibernate(args):
    client = await login(args, args.user, sm=True)
    await asyncio.sleep(0.3)
    ok = await enable(client, args, args.node, args.secret)
    await asyncio.sleep(0.3)
    client.abort()  # no </stream:stream>: the server keeps the session resumable
    return {"enabled": ok, "hibernated": True}


async def cmd_send(args):
    client = await login(args, args.user)
    for i in range(args.count):
        msg = client.make_message(mto=args.to, mtype="chat", mbody=args.body or None)
        msg["id"] = "it-%s" % uuid.uuid4().hex[:8]
        if not args.body:
            msg.append(ET.fromstring("<composing xmlns='http://jabber.org/protocol/chatstates'/>"))
        msg.send()
    await asyncio.sleep(0.5)
    await logout(client)
    return {"sent": args.count}


async def cmd_disable(args):
    client = await login(args, args.user)
    reply = await send_iq(client, "<disable xmlns='%s' jid='%s' node='%s'/>" % (NS_PUSH, args.component, args.node))
    await logout(client)
    return {"type": reply["type"], "reply": str(reply)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--component", default="push.localhost")
    p.add_argument("--timeout", type=float, default=10)
    p.add_argument("--user", required=True, help="name:password")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("register", "unregister"):
        s = sub.add_parser(name)
        s.add_argument("--dialect", choices=sorted(DIALECTS), default="tigase")
        s.add_argument("--flow", choices=["one", "two"], default="one")
        s.add_argument("--provider", default="apns")
        s.add_argument("--token", required=True)
        s.add_argument("--voip")
        s.add_argument("--device-id", default="device-1")
        s.add_argument("--enable", action="store_true")
    for name in ("enable", "hibernate", "disable"):
        s = sub.add_parser(name)
        s.add_argument("--node", required=True)
        s.add_argument("--secret")
    s = sub.add_parser("send")
    s.add_argument("--to", required=True)
    s.add_argument("--body", default="")
    s.add_argument("--count", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    Client.args = args
    handler = {
        "register": cmd_register, "unregister": cmd_unregister, "enable": cmd_enable,
        "hibernate": cmd_hibernate, "send": cmd_send, "disable": cmd_disable,
    }[args.command]
    result = asyncio.run(asyncio.wait_for(handler(args), args.timeout * 5))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
