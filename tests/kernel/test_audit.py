"""The audit trail's chain: records verify, and an edited, removed, reordered or torn record is found and named,
across rotated files and a kernel booted again under the same name."""

import json
import os
import stat

from llmos.kernel.audit import AuditLog
from llmos.syscalls import auditlog


def write_log(folder, n: int, max_bytes: int = 1 << 20) -> AuditLog:
    log = AuditLog(str(folder), max_bytes)
    for i in range(n):
        log.append("denied" if i % 3 == 0 else "attach", pid=i, message=f"record {i}")
    log.close()
    return log


def rewrite(path, change) -> None:
    with open(path) as f:
        lines = f.read().splitlines()
    lines = change(lines)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def test_a_whole_log_verifies_and_is_private(tmp_path):
    write_log(tmp_path, 10)
    v = auditlog.verify(str(tmp_path))
    assert v.ok and v.records == 10 and v.head_seq == 10 and v.anchored
    assert stat.S_IMODE(os.stat(tmp_path / "audit.log").st_mode) == 0o600
    first = json.loads((tmp_path / "audit.log").read_text().splitlines()[0])
    assert first["prev"] == auditlog.GENESIS and first["hash"] == auditlog.record_hash(first)


def test_an_edited_record_is_named(tmp_path):
    write_log(tmp_path, 10)
    rewrite(tmp_path / "audit.log", lambda ls: [l.replace('"pid":4', '"pid":40') for l in ls])
    v = auditlog.verify(str(tmp_path))
    assert not v.ok and v.where == "audit.log line 5" and "edited" in v.problem and v.records == 4


def test_an_edit_with_its_hash_recomputed_breaks_the_next_record(tmp_path):
    write_log(tmp_path, 10)

    def forge(ls):
        rec = json.loads(ls[4])
        rec["pid"] = 40
        rec["hash"] = auditlog.record_hash(rec)
        return ls[:4] + [json.dumps(rec)] + ls[5:]

    rewrite(tmp_path / "audit.log", forge)
    v = auditlog.verify(str(tmp_path))
    assert not v.ok and v.where == "audit.log line 6" and "prev" in v.problem


def test_removed_and_reordered_records_are_found(tmp_path):
    write_log(tmp_path, 10)
    rewrite(tmp_path / "audit.log", lambda ls: ls[:3] + ls[4:])
    v = auditlog.verify(str(tmp_path))
    assert not v.ok and v.where == "audit.log line 4"
    (tmp_path / "b").mkdir()
    write_log(tmp_path / "b", 10)
    rewrite(tmp_path / "b" / "audit.log", lambda ls: ls[:2] + [ls[3], ls[2]] + ls[4:])
    v = auditlog.verify(str(tmp_path / "b"))
    assert not v.ok and v.where == "audit.log line 3"


def test_rotation_keeps_the_chain_across_files_and_a_new_writer_goes_on(tmp_path):
    log = AuditLog(str(tmp_path), max_bytes=600)
    for i in range(12):
        log.append("attach", pid=i)
        log.flush()  # one tick per record: the file fills and rotates
    log.close()
    files = auditlog.files(str(tmp_path))
    assert len(files) > 2 and files[-1].endswith("audit.log") and files[0].endswith("audit.log.1")
    old_last = json.loads(open(files[0]).read().splitlines()[-1])
    new_first = json.loads(open(files[1]).read().splitlines()[0])
    assert new_first["prev"] == old_last["hash"]
    again = AuditLog(str(tmp_path), max_bytes=600)  # the kernel booted again under the same name
    again.append("kernel_boot")
    again.close()
    v = auditlog.verify(str(tmp_path))
    assert v.ok and v.records == 13 and v.head_seq == 13
    os.unlink(files[0])  # the owner pruned the oldest file: the rest still verifies, unanchored
    v = auditlog.verify(str(tmp_path))
    assert v.ok and not v.anchored


def test_a_torn_last_line_is_reported_and_skipped_by_the_next_writer(tmp_path):
    write_log(tmp_path, 3)
    with open(tmp_path / "audit.log", "a") as f:
        f.write('{"seq": 4, "ev')  # the kernel died in the middle of a write
    v = auditlog.verify(str(tmp_path))
    assert not v.ok and v.where == "audit.log line 4" and "JSON" in v.problem
    assert auditlog.head(str(tmp_path))[0] == 3
    log = AuditLog(str(tmp_path))  # goes on from record 3, on a line of its own
    log.append("kernel_boot")
    log.close()
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert json.loads(lines[-1])["seq"] == 4 and json.loads(lines[-1])["prev"] == json.loads(lines[2])["hash"]
