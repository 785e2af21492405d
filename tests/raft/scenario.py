"""The golden scenario language: commands that drive an ``Env`` and print what happened.

A scenario file is a sequence of blocks::

    # comments and blank lines are kept as they are
    command arg key=value key=(1,2)
    ----
    expected output (no blank lines; "ok" when the command prints nothing)

``run_file`` runs every block and returns the file as it should read with the actual output; the test compares
it with the file, and ``BOROUGH_REWRITE=1`` writes it back for review. Commands:

    add-nodes N [voters=(..)] [learners=(..)] [index=I] [empty] [prevote=] [checkquorum=] [readonly=safe|lease]
              [election=] [heartbeat=] [max-inflight=] [max-inflight-bytes=] [max-msg-entries=] [max-msg-bytes=]
              [max-uncommitted=] [max-committed=] [learner-snapshot-bytes=] [commit-broadcast=]
    campaign X | tick X [N] | elapse X N | tick-election X | tick-heartbeat X | tick-all [N]
    process-ready X.. | crash-mid-ready X | deliver-msgs [X..] [drop=(..)] | stabilize [X..]
    duplicate-msgs X.. | delay-msgs X.. | release-msgs
    partition A B / C | heal | crash X | restart X
    propose X DATA | propose-conf-change X v4 l5 r2 [transition=auto|implicit|explicit] | leave-joint X
    read-index X CTX | transfer-leadership X to=Y | report-unreachable X Y
    compact X [INDEX] | status X | raft-log X | raft-state | app X | snapshot X | idle X
"""

from __future__ import annotations

import pathlib
import shlex
from collections.abc import Callable

from borough.errors import BoroughError
from borough.raft.confchange import ChangeType, ConfChange, ConfChangeSingle, Transition
from borough.raft.config import RaftConfig
from borough.raft.memory_storage import MemoryLogStorage
from borough.raft.records import ConfState, EntryKind, NodeId, SnapshotMeta

from .env import Env, Envelope, fmt_conf, fmt_data, fmt_entry, fmt_msg, fmt_snap, parse_kv

SEP = "----"


def _bool(v: str) -> bool:
    if v not in ("true", "false"):
        raise ValueError(f"expected true or false, got {v!r}")
    return v == "true"


class Runner:
    def __init__(self, *, appends_first: bool = True) -> None:
        self.out: list[str] = []
        self.env = Env(out=self.out, appends_first=appends_first)
        self.held: list[Envelope] = []
        self.commands: dict[str, Callable[[list[str], dict[str, object]], None]] = {
            name.removeprefix("cmd_").replace("_", "-"): getattr(self, name)
            for name in dir(self)
            if name.startswith("cmd_")
        }

    def run(self, line: str) -> str:
        self.out.clear()
        words = shlex.split(line)
        cmd, args = words[0], words[1:]
        if cmd not in self.commands:
            raise ValueError(f"unknown command {cmd!r}")
        pos, kw = parse_kv(args)
        try:
            self.commands[cmd](pos, kw)
        except BoroughError as exc:
            self.out.append(f"error: {type(exc).__name__}: {exc}")
        return "\n".join(self.out) if self.out else "ok"

    # --- setup --------------------------------------------------------------------------------------------

    def cmd_add_nodes(self, pos: list[str], kw: dict[str, object]) -> None:
        n = int(pos[0])
        empty = "empty" in pos
        first = len(self.env.nodes) + 1
        ids = [str(i) for i in range(first, first + n)]
        voters = kw.get("voters", ids if not empty else [])
        learners = kw.get("learners", [])
        assert isinstance(voters, list) and isinstance(learners, list)
        index = int(str(kw.get("index", 0)))
        conf = ConfState(voters=voters, learners=learners)
        for i in ids:
            cfg = RaftConfig(
                id=NodeId(i),
                group="p",
                election_tick=int(str(kw.get("election", 10))),
                heartbeat_tick=int(str(kw.get("heartbeat", 1))),
                pre_vote=_bool(str(kw.get("prevote", "true"))),
                check_quorum=_bool(str(kw.get("checkquorum", "true"))),
                read_only="lease" if kw.get("readonly") == "lease" else "safe",
                max_inflight_msgs=int(str(kw.get("max-inflight", 256))),
                max_msg_entries=int(str(kw.get("max-msg-entries", 4096))),
                max_msg_bytes=int(str(kw.get("max-msg-bytes", 1 << 20))),
                max_inflight_bytes=int(str(kw.get("max-inflight-bytes", 0))),
                max_uncommitted_bytes=int(str(kw.get("max-uncommitted", 64 << 20))),
                max_committed_bytes_per_ready=int(str(kw.get("max-committed", 16 << 20))),
                learner_snapshot_bytes=int(str(kw.get("learner-snapshot-bytes", 64 << 10))),
                quiesce_ticks=int(str(kw.get("quiesce", 0))),
                commit_broadcast=_bool(str(kw.get("commit-broadcast", "false"))),
                coalesce_appends=_bool(str(kw.get("coalesce", "false"))),
            )
            if empty:
                storage = MemoryLogStorage(ConfState())
            elif index:
                storage = MemoryLogStorage(snapshot=SnapshotMeta(index=index, term=1, conf_state=conf))
            else:
                storage = MemoryLogStorage(conf)
            self.env.add_node(i, cfg, storage)

    # --- time and elections -------------------------------------------------------------------------------

    def cmd_campaign(self, pos: list[str], kw: dict[str, object]) -> None:
        self.env.raw(pos[0]).campaign()

    def cmd_tick(self, pos: list[str], kw: dict[str, object]) -> None:
        raw = self.env.raw(pos[0])
        for _ in range(int(pos[1]) if len(pos) > 1 else 1):
            raw.tick()

    def cmd_elapse(self, pos: list[str], kw: dict[str, object]) -> None:
        self.env.raw(pos[0]).elapse(int(pos[1]))

    def cmd_tick_election(self, pos: list[str], kw: dict[str, object]) -> None:
        node = self.env.nodes[NodeId(pos[0])]
        for _ in range(node.config.election_tick):
            self.env.raw(pos[0]).tick()

    def cmd_tick_heartbeat(self, pos: list[str], kw: dict[str, object]) -> None:
        node = self.env.nodes[NodeId(pos[0])]
        for _ in range(node.config.heartbeat_tick):
            self.env.raw(pos[0]).tick()

    def cmd_tick_all(self, pos: list[str], kw: dict[str, object]) -> None:
        for _ in range(int(pos[0]) if pos else 1):
            for node in self.env.nodes.values():
                if node.raw is not None:
                    node.raw.tick()

    # --- driving ------------------------------------------------------------------------------------------

    def cmd_process_ready(self, pos: list[str], kw: dict[str, object]) -> None:
        for nid in pos:
            self.env.process_ready(nid)

    def cmd_crash_mid_ready(self, pos: list[str], kw: dict[str, object]) -> None:
        """Process X's next Ready, crashing X right after the messages that may leave before its write left
        (``Env.crash_mid_ready``). If none may (persist-first, or the Ready forbids it), the Ready is processed
        whole and X keeps running: the two orders print the same thing only when nothing leaves early."""
        nid = NodeId(pos[0])
        self.env.crash_mid_ready.add(nid)
        try:
            self.env.process_ready(nid)
        finally:
            self.env.crash_mid_ready.discard(nid)

    def cmd_deliver_msgs(self, pos: list[str], kw: dict[str, object]) -> None:
        drop = kw.get("drop", [])
        assert isinstance(drop, list)
        # Messages to ``drop`` nodes are dropped; the others to the named nodes (default: all) are delivered.
        targets = sorted(set(pos or {e.msg.to for e in self.env.net}) | {NodeId(d) for d in drop})
        for nid in targets:
            if any(e.msg.to == nid for e in self.env.net):
                self.env.say(f"> {nid} receiving messages")
                self.env.deliver_all([nid], drop=drop)

    def cmd_duplicate_msgs(self, pos: list[str], kw: dict[str, object]) -> None:
        """Every message in flight to the named nodes is duplicated (both copies stay in flight)."""
        targets = {NodeId(p) for p in pos}
        dups = [Envelope(msg=e.msg, data=e.data) for e in self.env.net if e.msg.to in targets]
        self.env.net.extend(dups)
        self.out.extend(f"  {fmt_msg(e.msg)} (duplicated)" for e in dups)

    def cmd_delay_msgs(self, pos: list[str], kw: dict[str, object]) -> None:
        """Messages in flight to the named nodes are held back until ``release-msgs`` (then they arrive after
        everything sent in between: delay and reordering)."""
        held = self.env.take(pos)
        self.held.extend(held)
        self.out.extend(f"  {fmt_msg(e.msg)} (delayed)" for e in held)

    def cmd_release_msgs(self, pos: list[str], kw: dict[str, object]) -> None:
        self.env.net.extend(self.held)
        self.held.clear()

    def cmd_stabilize(self, pos: list[str], kw: dict[str, object]) -> None:
        self.env.stabilize(pos or None)

    def cmd_partition(self, pos: list[str], kw: dict[str, object]) -> None:
        groups: list[list[str]] = [[]]
        for p in pos:
            if p == "/":
                groups.append([])
            else:
                groups[-1].append(p)
        self.env.partition(groups)

    def cmd_heal(self, pos: list[str], kw: dict[str, object]) -> None:
        self.env.heal()

    def cmd_crash(self, pos: list[str], kw: dict[str, object]) -> None:
        self.env.crash(pos[0])

    def cmd_restart(self, pos: list[str], kw: dict[str, object]) -> None:
        self.env.restart(pos[0])
        node = self.env.nodes[NodeId(pos[0])]
        hs = node.storage.hard_state
        self.out.append(f"persisted: term={hs.term} vote={hs.vote or '-'} commit={hs.commit} applied={node.applied}")
        self.out.append(self.env.state_line(NodeId(pos[0])))

    # --- requests -----------------------------------------------------------------------------------------

    def cmd_propose(self, pos: list[str], kw: dict[str, object]) -> None:
        index = self.env.raw(pos[0]).propose(pos[1].encode())
        self.out.append(f"index {index}")

    def cmd_propose_conf_change(self, pos: list[str], kw: dict[str, object]) -> None:
        kinds = {"v": ChangeType.ADD_VOTER, "l": ChangeType.ADD_LEARNER, "r": ChangeType.REMOVE_NODE}
        changes = [ConfChangeSingle(type=kinds[c[0]], node=NodeId(c[1:])) for c in pos[1:]]
        transition = {
            "auto": Transition.AUTO,
            "implicit": Transition.JOINT_IMPLICIT,
            "explicit": Transition.JOINT_EXPLICIT,
        }
        cc = ConfChange(changes=changes, transition=transition[str(kw.get("transition", "auto"))])
        index = self.env.raw(pos[0]).propose_conf_change(cc)
        self.out.append(f"index {index}")

    def cmd_leave_joint(self, pos: list[str], kw: dict[str, object]) -> None:
        index = self.env.raw(pos[0]).propose_conf_change(ConfChange.leave_joint())
        self.out.append(f"index {index}")

    def cmd_read_index(self, pos: list[str], kw: dict[str, object]) -> None:
        self.env.raw(pos[0]).read_index(pos[1].encode())

    def cmd_transfer_leadership(self, pos: list[str], kw: dict[str, object]) -> None:
        self.env.raw(pos[0]).transfer_leadership(str(kw["to"]))

    def cmd_report_unreachable(self, pos: list[str], kw: dict[str, object]) -> None:
        self.env.raw(pos[0]).report_unreachable(pos[1])

    def cmd_compact(self, pos: list[str], kw: dict[str, object]) -> None:
        node = self.env.nodes[NodeId(pos[0])]
        index = int(pos[1]) if len(pos) > 1 else node.applied
        meta = self.env.raw(pos[0]).compact(index)
        self.out.append(f"compaction {fmt_snap(meta)}" if meta else "nothing to compact")

    # --- printers -----------------------------------------------------------------------------------------

    def cmd_status(self, pos: list[str], kw: dict[str, object]) -> None:
        st = self.env.raw(pos[0]).status()
        self.out.append(self.env.state_line(NodeId(pos[0])))
        self.out.append(f"conf: {fmt_conf(st.conf_state)}")
        if st.lead_transferee:
            self.out.append(f"transferring to {st.lead_transferee}")
        for nid, p in st.progress.items():
            flags = (" learner" if p.learner else "") + ("" if p.recent_active else " inactive")
            inflight = f" inflight={p.inflight}" if p.inflight else ""
            self.out.append(f"{nid}: {p.state.value} match={p.match} next={p.next}{inflight}{flags}")

    def cmd_raft_log(self, pos: list[str], kw: dict[str, object]) -> None:
        node = self.env.nodes[NodeId(pos[0])]
        st = node.storage
        if st.snap.index:
            self.out.append(f"snapshot {fmt_snap(st.snap)}")
        raw = node.raw
        last = raw.status().last_index if raw is not None else st.last_index()
        entries = []
        if raw is not None:
            log = raw._raft.log  # the unstable tail too: what the node's log is, not only what is stored
            if last >= log.first_index():
                entries = log.slice(log.first_index(), last + 1, 1 << 62)
        else:
            entries = st.ents
        if not entries and not st.snap.index:
            self.out.append("log is empty")
        self.out.extend(fmt_entry(e) for e in entries)

    def cmd_raft_state(self, pos: list[str], kw: dict[str, object]) -> None:
        for nid in sorted(self.env.nodes):
            self.out.append(self.env.state_line(nid))

    def cmd_app(self, pos: list[str], kw: dict[str, object]) -> None:
        node = self.env.nodes[NodeId(pos[0])]
        shown = [f"{e.index}:{fmt_data(e.data)}" for e in node.app if e.data and e.kind == EntryKind.NORMAL]
        self.out.append(f"applied={node.applied} data=[{' '.join(shown)}]")

    def cmd_snapshot(self, pos: list[str], kw: dict[str, object]) -> None:
        node = self.env.nodes[NodeId(pos[0])]
        self.out.append(f"stored snapshot {fmt_snap(node.storage.snap)} first-index={node.storage.first_index()}")

    def cmd_quiesced(self, pos: list[str], kw: dict[str, object]) -> None:
        """Which nodes are quiesced (their clock stands still)."""
        for nid in sorted(self.env.nodes):
            raw = self.env.nodes[nid].raw
            if raw is not None:
                self.out.append(f"{nid}: {'quiesced' if raw.quiesced else 'awake'}")

    def cmd_tick_quietly(self, pos: list[str], kw: dict[str, object]) -> None:
        """``tick-quietly N X Y ...``: N times, tick the named nodes once and stabilize, printing nothing but the
        number of messages delivered (time passing in a healthy cluster; follow with status commands)."""
        delivered = 0
        saved, self.env.out = self.env.out, []
        try:
            for _ in range(int(pos[0])):
                for nid in pos[1:]:
                    self.env.raw(nid).tick()
                self.env.stabilize()
                # Delivered messages print as "  a->b ..." under "> b receiving messages" (a Ready's are indented more).
                delivered += sum(1 for line in self.env.out if line.startswith("  ") and line[2:3].isdigit())
                self.env.out.clear()
        finally:
            self.env.out = saved
        self.out.append(f"{delivered} messages delivered")

    def cmd_forget_leader(self, pos: list[str], kw: dict[str, object]) -> None:
        self.env.raw(pos[0]).forget_leader(int(str(kw.get("in", 0))), _bool(str(kw.get("sure", "true"))))

    def cmd_wake(self, pos: list[str], kw: dict[str, object]) -> None:
        self.env.raw(pos[0]).wake()

    def cmd_idle(self, pos: list[str], kw: dict[str, object]) -> None:
        self.out.append(f"idle={str(self.env.raw(pos[0]).is_idle()).lower()}")


def run_file(path: pathlib.Path, *, appends_first: bool = True) -> str:
    """Run the scenario at ``path``; return its text with every expected output replaced by the actual one.
    ``appends_first`` is the driver order (see ``borough.raft.ready_plan``); production sends appends first."""
    lines = path.read_text().splitlines()
    runner = Runner(appends_first=appends_first)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            out.append(line)
            i += 1
            continue
        command = line
        i += 1
        if i >= len(lines) or lines[i] != SEP:
            raise ValueError(f"{path.name}:{i}: expected {SEP!r} after command {command!r}")
        i += 1
        while i < len(lines) and lines[i].strip():
            i += 1  # the recorded output, replaced below
        try:
            actual = runner.run(command)
        except Exception as exc:
            raise AssertionError(f"{path.name}: command {command!r} failed: {exc!r}") from exc
        out.extend([command, SEP, actual])
    return "\n".join(out) + "\n"


__all__ = ["Runner", "fmt_data", "fmt_entry", "run_file"]
