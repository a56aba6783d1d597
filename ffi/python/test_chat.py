#!/usr/bin/env python3
"""Two Python clients chat through the generated tern_ffi module and a real server.

Run by ffi/tests/python.rs (`cargo test -p tern-ffi`), which generates the module,
starts the server and does the faults this script asks for on stdout ("CTRL kill",
"CTRL restart"; it answers "<what> done" on stdin). Environment: TERN_FFI_MODULE_DIR
(tern_ffi.py + libtern_ffi.so), TERN_SERVER (host:port), TERN_CA (the server's CA PEM),
TERN_STATE_DIR (a writable directory).

What it checks, as a user would notice it:
1. alice sends N messages to bob; the server is killed with SIGKILL after the first half
   was queued and restarted while the second half is queued: every send is acked, bob
   gets all N exactly once and in order, and the server stored each once (history);
2. four Python threads send through the same client object at once: all delivered once;
3. a listener that raises does not stop delivery (counted in listener_failures); one that
   blocks stalls only its own events: requests and sends of that client go on, and the
   held-back events arrive in order when it returns;
4. errors carry the protocol's code; bad options are refused at construction;
5. groups, members, presence, conversation list; a client object the app drops closes
   (its device goes offline); attachments: alice uploads a PNG made here (progress
   reported chunk by chunk; the same file again is not sent twice) and sends it, bob
   gets the message with its attachment and a JPEG thumbnail, downloads it (same
   sha256) and gets its URL; the avatar; read receipts; role change and ownership
   transfer; the group's topic; a user search; a channel found, joined and left;
   watching a group's presence;
6. bob closes, alice sends, bob restarts from his state file without a password
   (resume): he gets only what he missed;
7. carol's app (a child process) is killed with SIGKILL while her listener is stuck in a
   message: after her restart that message and the ones queued behind it come again,
   once each and in order (the binding confirms a message only after its listener
   returned), nothing she had confirmed comes again, and her SQLite copy (read offline
   with local_history) holds each message once;
8. apps that exit while their client's event thread is calling in (an auth failure
   reported as the interpreter shuts down) exit cleanly: the module's atexit hook stops
   the callbacks first (without it, about half of such exits aborted).
"""

import asyncio
import gc
import hashlib
import os
import signal
import struct
import subprocess
import sys
import threading
import zlib

sys.path.insert(0, os.environ["TERN_FFI_MODULE_DIR"])
import tern_ffi as t  # noqa: E402

SERVER = os.environ["TERN_SERVER"]
CA = os.environ["TERN_CA"]
STATE = os.environ["TERN_STATE_DIR"]
PASSWORD = "correct horse battery"
N = 600
TIMEOUT = 60.0


def log(*args):
    print("test_chat:", *args, file=sys.stderr, flush=True)


def control(what):
    """Asks the Rust harness for a fault and waits until it is done."""
    print(f"CTRL {what}", flush=True)
    answer = sys.stdin.readline().strip()
    assert answer == f"{what} done", f"harness answered {answer!r} to {what!r}"


class Recorder(t.EventListener):
    """Keeps every event; can raise on or block at a given message text."""

    def __init__(self, name):
        self.name = name
        self.events = []
        self.cond = threading.Condition()
        self.raise_on = set()
        self.block_on = None
        self.blocked = threading.Event()
        self.release = threading.Event()

    def on_event(self, event):
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()
        if event.is_MESSAGE() and not event.own:
            text = event.message.text
            if text in self.raise_on:
                raise RuntimeError(f"{self.name}: listener fails on {text!r} on purpose")
            if text == self.block_on:
                self.blocked.set()
                self.release.wait(TIMEOUT)

    async def wait(self, what, pred):
        """Waits until pred(events) holds (bounded)."""

        def check():
            with self.cond:
                return self.cond.wait_for(lambda: pred(self.events), TIMEOUT)

        if not await asyncio.to_thread(check):
            raise AssertionError(f"{self.name}: timed out waiting for {what}")

    def texts(self):
        """Texts of the messages from others, in delivery order."""
        with self.cond:
            return [e.message.text for e in self.events if e.is_MESSAGE() and not e.own]

    def count(self, pred):
        with self.cond:
            return sum(1 for e in self.events if pred(e))


def options(user, **kw):
    args = dict(
        server=SERVER,
        ca_cert_path=CA,
        username=user,
        password=PASSWORD,
        device="py",
        state_path=os.path.join(STATE, f"{user}.json"),
    )
    args.update(kw)
    return t.ClientOptions(**args)


def carol_options():
    """Carol keeps her state and messages in SQLite."""
    return options("carol", state_path=os.path.join(STATE, "carol.db"), sqlite_state=True)


def user(name):
    return t.FfiTarget.USER(username=name)


async def timed(aw):
    return await asyncio.wait_for(aw, TIMEOUT)


async def send_all(client, target, texts):
    return [await timed(client.send(target, s.encode(), t.FfiSendOptions())) for s in texts]


def acked_ids(events):
    return {e.ack.client_msg_id for e in events if e.is_ACKED()}


async def end_marker(alice, ra, rb, marker):
    """Everything alice sent to bob before `marker` reached bob before it (in order)."""
    await timed(alice.send_text(user("bob"), marker))
    await rb.wait(f"marker {marker}", lambda evs: any(
        e.is_MESSAGE() and e.message.text == marker for e in evs))


async def main():
    for name in ("alice", "bob"):
        await timed(t.register(SERVER, CA, name, PASSWORD))
    try:
        await timed(t.register(SERVER, CA, "alice", PASSWORD))
        raise AssertionError("registering alice twice succeeded")
    except t.FfiError.Server as e:
        assert e.code == "USER_EXISTS", e
        log("register twice:", e)
    try:
        t.TernClient(options("alice", server="not an address"), Recorder("x"))
        raise AssertionError("a bad address was accepted")
    except t.FfiError.InvalidArgument as e:
        log("bad address:", e)
    try:
        t.TernClient(options("alice", ca_cert_path="/nonexistent/ca.pem"), Recorder("x"))
        raise AssertionError("a missing CA file was accepted")
    except t.FfiError.InvalidArgument as e:
        log("missing CA:", e)
    ok = await timed(t.login(SERVER, CA, "alice", PASSWORD, "check"))
    assert ok.username == "alice", ok

    ra, rb = Recorder("alice"), Recorder("bob")
    alice = t.TernClient(options("alice"), ra)
    bob = t.TernClient(options("bob", transport=t.FfiTransport.TCP), rb)
    for r in (ra, rb):
        await r.wait("connected", lambda evs: any(e.is_CONNECTED() for e in evs))

    # 1. A kill -9 in the middle of a stream.
    first = await send_all(alice, user("bob"), [f"m{i}" for i in range(N // 2)])
    await ra.wait("the first acks", lambda evs: len(acked_ids(evs)) >= 30)
    control("kill")
    acked_before_restart = len(acked_ids(ra.events))
    second = await send_all(alice, user("bob"), [f"m{i}" for i in range(N // 2, N)])
    control("restart")
    ids = first + second
    assert len(set(ids)) == N
    await ra.wait(f"{N} acks", lambda evs: acked_ids(evs) >= set(ids))
    assert ra.count(lambda e: e.is_SEND_FAILED()) == 0
    assert ra.count(lambda e: e.is_RECONNECTING()) >= 1, "alice never saw the server go"
    assert rb.count(lambda e: e.is_RECONNECTING()) >= 1, "bob never saw the server go"
    await end_marker(alice, ra, rb, "end1")
    expected = [f"m{i}" for i in range(N)] + ["end1"]
    got = rb.texts()
    assert got == expected, f"bob got {len(got)} texts; first differences: " + str(
        [(i, a, b) for i, (a, b) in enumerate(zip(got, expected)) if a != b][:5])
    conv = next(e.message.conversation for e in rb.events if e.is_MESSAGE())
    seqs = [e.message.seq for e in rb.events if e.is_MESSAGE() and not e.own]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seqs not contiguous"
    page = await timed(bob.history(conv, 0, 1000))
    stored = [m.text for m in page.messages]
    assert stored == expected, f"the server stored {len(stored)} messages, not {len(expected)}"
    log(f"kill -9: {N} sent, {acked_before_restart} acked before the restart, "
        f"{len(acked_ids(ra.events))} acked in the end, bob got {len(got) - 1} + marker, "
        f"duplicate acks {ra.count(lambda e: e.is_ACKED() and e.ack.duplicate)}")

    # 2. Several threads at once on one client object.
    def sender(k):
        async def run():
            for j in range(10):
                await timed(alice.send_text(user("bob"), f"t{k}-{j}"))
        asyncio.run(run())

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(TIMEOUT)
        assert not th.is_alive(), "a sending thread hung"
    await end_marker(alice, ra, rb, "end2")
    got = rb.texts()[len(expected):]
    assert got[-1] == "end2" and sorted(got[:-1]) == sorted(
        f"t{k}-{j}" for k in range(4) for j in range(10)), got
    for k in range(4):
        mine = [s for s in got if s.startswith(f"t{k}-")]
        assert mine == [f"t{k}-{j}" for j in range(10)], mine
    log("4 threads x 10 sends on one client: delivered once each, in each thread's order")

    # 3. A listener that raises, then one that blocks.
    rb.raise_on.add("boom")
    await end_marker(alice, ra, rb, "boom")
    await end_marker(alice, ra, rb, "after-boom")
    assert bob.listener_failures() == 1, bob.listener_failures()
    rb.block_on = "block"
    await timed(alice.send_text(user("bob"), "block"))
    assert await asyncio.to_thread(rb.blocked.wait, TIMEOUT), "bob's listener never blocked"
    for i in range(3):
        await timed(alice.send_text(user("bob"), f"held{i}"))
    # Bob's requests and sends go on while his listener is stuck.
    page = await timed(bob.history(conv, 0, 5))
    assert [m.text for m in page.messages][-3:] == ["held0", "held1", "held2"]
    ack = await timed(bob.send_text(user("alice"), "bob is not stuck"))
    assert ack.seq > 0
    assert "held0" not in rb.texts(), "an event passed the blocked listener"
    rb.release.set()
    await end_marker(alice, ra, rb, "end3")
    assert rb.texts()[-5:] == ["block", "held0", "held1", "held2", "end3"], rb.texts()[-6:]
    log("listener raising: counted, delivery went on; blocking: requests went on, "
        "held events came after, in order")

    # 4. Errors carry the protocol's code.
    try:
        await timed(alice.history("g:00000000000000ff", 0, 10))
        raise AssertionError("history of a group alice is not in succeeded")
    except t.FfiError.Server as e:
        assert e.code in ("NOT_FOUND", "FORBIDDEN", "INVALID_ARGUMENT"), e
        log("history of a foreign group:", e.code, e.code_number, e.reason)
    try:
        await timed(alice.send_text(user("nobody-by-this-name"), "hello?"))
        raise AssertionError("a send to nobody was acked")
    except t.FfiError.Server as e:
        log("send to no such user:", e.code, e.reason)

    # 5. Groups, presence, the conversation list.
    group = await timed(alice.create_group("py group", ["bob"]))
    await timed(alice.send_text(t.FfiTarget.CONVERSATION(id=group.conversation), "hi group"))
    await rb.wait("the group message", lambda evs: any(
        e.is_MESSAGE() and e.message.text == "hi group" for e in evs))
    members = await timed(bob.members(group.conversation))
    assert sorted((m.username, m.role) for m in members) == [
        ("alice", "OWNER"), ("bob", "MEMBER")], members
    presence = await timed(alice.presence(["bob"]))
    assert presence[0].online_devices == ["py"], presence
    listed = await timed(bob.conversations(50, 0))
    assert {c.conversation for c in listed.conversations} >= {conv, group.conversation}
    read = await timed(bob.mark_read(conv, 0))
    assert read.unread == 0, read

    await attachments(alice, bob, rb)
    await groups_and_channels(alice, bob, ra, group.conversation)

    # A client object the app lets go of closes: its device goes offline.
    rt = Recorder("bob-tablet")
    tablet = t.TernClient(options("bob", device="tablet", state_path=None), rt)
    await rt.wait("connected", lambda evs: any(e.is_CONNECTED() for e in evs))
    assert "tablet" in (await timed(alice.presence(["bob"])))[0].online_devices
    del tablet
    gc.collect()
    for _ in range(int(TIMEOUT * 10)):
        if "tablet" not in (await timed(alice.presence(["bob"])))[0].online_devices:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("bob's tablet stayed online after its client was dropped")
    await rt.wait("closed", lambda evs: any(e.is_CLOSED() for e in evs))

    # 6. Close, miss a message, resume from the state file without a password.
    await timed(bob.close())
    await rb.wait("closed", lambda evs: any(e.is_CLOSED() for e in evs))
    await timed(alice.send_text(user("bob"), "while you were away"))
    rb2 = Recorder("bob2")
    bob2 = t.TernClient(options("bob", password=None, transport=t.FfiTransport.TCP), rb2)
    await end_marker(alice, ra, rb2, "end4")
    assert rb2.texts() == ["while you were away", "end4"], rb2.texts()
    await timed(bob2.close())
    await timed(alice.close())
    await ra.wait("closed", lambda evs: any(e.is_CLOSED() for e in evs))
    log("resume from the state file: only the missed message came")

    # 7. The app killed with SIGKILL while its listener holds a message.
    await timed(t.register(SERVER, CA, "carol", PASSWORD))
    ra = Recorder("alice")
    alice = t.TernClient(options("alice"), ra)
    child = subprocess.Popen([sys.executable, __file__, "carol-child"],
                             stdout=subprocess.PIPE, text=True)
    lines = []

    async def child_says(what):
        while True:
            line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), TIMEOUT)
            assert line, f"carol's app ended before saying {what!r}; said {lines}"
            lines.append(line.strip())
            if line.strip() == what:
                return

    await child_says("READY")
    for text in ("c1", "c2"):
        await timed(alice.send_text(user("carol"), text))
    await child_says("GOT c2")
    for text in ("hold", "c3", "c4"):
        await timed(alice.send_text(user("carol"), text))
    await child_says("HOLDING")
    os.kill(child.pid, signal.SIGKILL)
    child.wait(TIMEOUT)
    rc = Recorder("carol")
    carol = t.TernClient(carol_options(), rc)
    await timed(alice.send_text(user("carol"), "end5"))
    await rc.wait("end5", lambda evs: any(
        e.is_MESSAGE() and e.message.text == "end5" for e in evs))
    again = rc.texts()
    tail = ["hold", "c3", "c4", "end5"]
    # c2 is confirmed when carol's queue ran empty after it (before "hold" was sent);
    # everything from "hold" on was never confirmed: it comes again, once, in order.
    assert again == tail, f"after the kill carol got {again}; before it: {lines}"
    await timed(carol.close())
    await timed(alice.close())
    # Her SQLite copy holds each message once, readable offline.
    conv_c = next(e.message.conversation for e in rc.events if e.is_MESSAGE())
    local = [m.text for m in carol.local_history(conv_c, 0, 100)]
    assert local == ["c1", "c2"] + tail, local
    assert [c.conversation for c in carol.local_conversations()] == [conv_c]
    try:
        alice.local_history(conv_c, 0, 10)
        raise AssertionError("a client without sqlite_state read a local copy")
    except t.FfiError.InvalidArgument:
        pass
    log(f"app killed inside its listener: before {lines[1:]}, after the restart {again}; "
        f"local SQLite copy {local}")

    # 8. Exiting while the event thread calls in.
    codes = []
    for _ in range(10):
        child = await asyncio.to_thread(
            subprocess.run, [sys.executable, __file__, "exit-child"], timeout=TIMEOUT)
        codes.append(child.returncode)
    assert codes == [0] * 10, f"exit codes {codes}"
    log("10 apps exiting during a callback: all exited with 0")
    log("PASS")


def png(width, height):
    """A valid RGB PNG of random pixels (incompressible: an upload of several chunks)."""
    raw = b"".join(b"\x00" + os.urandom(width * 3) for _ in range(height))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


class Progress(t.TransferProgress):
    def __init__(self):
        self.calls = []

    def on_progress(self, done, total):
        self.calls.append((done, total))

    def check(self, size):
        assert self.calls and self.calls[-1] == (size, size), self.calls
        done = [d for d, _ in self.calls]
        assert done == sorted(done) and all(total == size for _, total in self.calls), self.calls


def is_image_message(digest):
    return lambda e: (e.is_MESSAGE() and e.message.attachment is not None
                      and e.message.attachment.blob_id == digest)


async def attachments(alice, bob, rb):
    """An image message from upload to download, the URL and the avatar."""
    image = png(1000, 800)
    digest = hashlib.sha256(image).hexdigest()
    up = Progress()
    blob = await timed(alice.upload_bytes(image, "image/png", up))
    assert blob.blob_id == digest, (blob.blob_id, digest)
    assert (blob.size, blob.mime, blob.width, blob.height) == (
        len(image), "image/png", 1000, 800), blob
    assert blob.thumbnail[:2] == b"\xff\xd8", "the thumbnail is not a JPEG"
    assert (blob.thumbnail_width, blob.thumbnail_height) == (320, 256), blob
    up.check(len(image))
    assert len(up.calls) >= 5, f"{len(image)} bytes in {len(up.calls)} progress calls"
    # The same content from a file: the server has it, nothing is sent again.
    path = os.path.join(STATE, "picture.png")
    with open(path, "wb") as f:
        f.write(image)
    again_progress = Progress()
    again = await timed(alice.upload_file(path, "image/png", again_progress))
    assert again.blob_id == digest and again_progress.calls == [(len(image), len(image))], (
        again_progress.calls)

    attach = t.FfiAttachmentRef(blob_id=digest, name="picture.png")
    ack = await timed(alice.send_and_wait(
        user("bob"), b"a caption", t.FfiSendOptions(attachment=attach)))
    await rb.wait("the image message", lambda evs: any(is_image_message(digest)(e) for e in evs))
    message = next(e.message for e in rb.events if is_image_message(digest)(e))
    assert message.seq == ack.seq and message.text == "a caption", message
    a = message.attachment
    assert (a.name, a.size, a.mime, a.width, a.height) == (
        "picture.png", len(image), "image/png", 1000, 800), a
    assert a.thumbnail == blob.thumbnail and (a.thumbnail_width, a.thumbnail_height) == (
        320, 256), "the received thumbnail differs from the uploaded one"
    page = await timed(bob.history(message.conversation, 0, 1))
    assert page.messages[-1].attachment == a, "history lost the attachment"

    down = Progress()
    target = os.path.join(STATE, "bob-picture.png")
    got = await timed(bob.download(digest, target, down))
    assert (got.size, got.mime) == (len(image), "image/png"), got
    with open(target, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest, "bob's copy differs"
    down.check(len(image))
    assert await timed(bob.download_bytes(digest, None)) == image
    url = await timed(bob.blob_url(digest))
    assert url.path.startswith(f"/blob/{digest}?") and url.expires_ms > ack.server_time_ms, url

    # A file bob may not read: alice's upload that she never sent.
    secret = await timed(alice.upload_bytes(b"alice only " + os.urandom(16), "text/plain", None))
    try:
        await timed(bob.download(secret.blob_id, os.path.join(STATE, "secret"), None))
        raise AssertionError("bob downloaded a blob nobody sent him")
    except t.FfiError.Server as e:
        assert e.code == "NOT_FOUND", e
    assert not os.path.exists(os.path.join(STATE, "secret")), "a refused download left a file"

    profile = await timed(alice.set_avatar(digest))
    assert profile.avatar == digest, profile
    assert [p.avatar for p in await timed(bob.get_profiles(["alice"]))] == [digest]
    try:
        await timed(alice.set_avatar(secret.blob_id))
        raise AssertionError("a text file became an avatar")
    except t.FfiError.Server as e:
        assert e.code == "INVALID_ARGUMENT", e

    # Read receipts of the image: bob has read it.
    await timed(bob.mark_read(message.conversation, message.seq))
    receipts = await timed(alice.receipts(message.conversation, message.seq))
    assert (receipts.read_by, receipts.read_count, receipts.members) == (["bob"], 1, 1), receipts
    log(f"attachment: {len(image)}-byte PNG uploaded in {len(up.calls)} progress steps, "
        f"again from a file without sending, received with a "
        f"{len(a.thumbnail)}-byte {a.thumbnail_width}x{a.thumbnail_height} thumbnail, "
        f"downloaded in {len(down.calls)} steps with the same sha256; avatar set; "
        f"receipts {receipts.read_by}")


async def groups_and_channels(alice, bob, ra, group):
    """Roles and ownership, a channel found, joined and left, a group's presence watched."""

    async def roles():
        return {m.username: m.role for m in await timed(bob.members(group))}

    await timed(alice.set_member_role(group, "bob", t.FfiRole.ADMIN))
    assert await roles() == {"alice": "OWNER", "bob": "ADMIN"}
    await timed(alice.transfer_ownership(group, "bob"))
    assert await roles() == {"alice": "ADMIN", "bob": "OWNER"}
    try:
        await timed(alice.set_member_role(group, "bob", t.FfiRole.MEMBER))
        raise AssertionError("an admin demoted the owner")
    except t.FfiError.Server as e:
        assert e.code == "FORBIDDEN", e

    await timed(alice.update_group(group, t.FfiGroupUpdate(
        topic="py topic", visibility=t.FfiHistoryVisibility.SHARED)))
    listed = (await timed(bob.conversations(50, 0))).conversations
    assert [c.topic for c in listed if c.conversation == group] == ["py topic"], listed

    channel = (await timed(alice.create_channel("Py channel", False))).conversation
    listed = await timed(bob.list_channels("py ch", 10))
    assert [(c.conversation, c.joined, c.member_count) for c in listed] == [
        (channel, False, 1)], listed
    await timed(bob.join_channel(channel))
    assert [c.joined for c in await timed(bob.list_channels("py ch", 10))] == [True]
    await timed(bob.leave_group(channel))
    assert [c.joined for c in await timed(bob.list_channels("py ch", 10))] == [False]

    # dave shares no 1:1 with alice: she hears of him only through her watch of a group
    # he is in, set before he ever comes online (a change is announced once settled).
    await timed(t.register(SERVER, CA, "dave", PASSWORD))
    assert [u.user for u in await timed(alice.search_users("dav", 10))] == ["dave"]
    watched = (await timed(alice.create_group("watched", ["dave"]))).conversation
    online = await timed(alice.watch_group(watched))
    assert (online.members, online.online_members) == (2, 1), online
    rd = Recorder("dave")
    dave = t.TernClient(options("dave", state_path=None), rd)

    def dave_is(state):
        return lambda evs: any(
            e.is_PRESENCE() and e.user == "dave" and e.online == state for e in evs)

    await ra.wait("dave online (the watch)", dave_is(True))
    assert (await timed(alice.group_online(watched))).online_members == 2
    await timed(dave.close())
    await ra.wait("dave offline (the watch)", dave_is(False))
    online = await timed(alice.unwatch_group(watched))
    assert (online.members, online.online_members) == (2, 1), online
    log("roles: bob made admin, then owner; channel listed, joined, left; "
        "watching a group: dave coming online and going offline came as Presence events")

    # Contacts beyond request/accept, account settings and the push target (docs/PUSH.md).
    await timed(alice.send_friend_request("dave", "hi dave"))
    assert [(c.user, c.state) for c in await timed(alice.contacts())] == [("dave", "OUTGOING")]
    await timed(alice.cancel_friend_request("dave"))
    assert await timed(alice.contacts()) == []
    await timed(alice.block_user("dave"))
    assert [(c.user, c.state) for c in await timed(alice.contacts())] == [("dave", "BLOCKED_USER")]
    try:
        await timed(alice.send_text(t.FfiTarget.USER(username="dave"), "blocked?"))
        raise AssertionError("a message to a blocked user was stored")
    except t.FfiError.Server as e:
        assert e.code == "BLOCKED", e
    await timed(alice.unblock_user("dave"))
    await timed(alice.send_text(t.FfiTarget.USER(username="dave"), "unblocked"))
    assert await timed(alice.set_send_receipts(False)) is False
    assert await timed(alice.set_send_receipts(None)) is False
    assert await timed(alice.set_send_receipts(True)) is True
    await timed(alice.register_push_target("webhook", "https://push.example/alice", False))
    try:
        await timed(alice.register_push_target("webhook", "", False))
        raise AssertionError("an empty push token was accepted")
    except t.FfiError.Server as e:
        assert e.code == "INVALID_ARGUMENT", e
    await timed(alice.unregister_push_target())
    log("contacts: request cancelled, block refuses with BLOCKED, unblock lets through; "
        "receipts setting toggled; push target registered, a bad one refused, removed")


def carol_child():
    """Carol's app: says what it gets on stdout; holds forever inside "hold"."""

    class Printer(t.EventListener):
        def on_event(self, event):
            if event.is_CAUGHT_UP():
                print("READY", flush=True)
            if event.is_MESSAGE() and not event.own:
                print(f"GOT {event.message.text}", flush=True)
                if event.message.text == "hold":
                    print("HOLDING", flush=True)
                    threading.Event().wait()

    carol = t.TernClient(carol_options(), Printer())
    threading.Event().wait(TIMEOUT * 2)
    del carol


def exit_child():
    """An app that exits at once while its client reports a failed login."""

    class Slow(t.EventListener):
        def on_event(self, event):
            sum(range(10000))

    t.TernClient(options("carol", password="wrong", state_path=None), Slow())
    threading.Event().wait(0.05)


if len(sys.argv) > 1 and sys.argv[1] == "carol-child":
    carol_child()
elif len(sys.argv) > 1 and sys.argv[1] == "exit-child":
    exit_child()
else:
    asyncio.run(main())
