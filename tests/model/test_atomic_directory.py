"""model.atomic: what a checkpoint write may replace, errors that name the user's path, stale temporaries and
their owners, and the two-rename fallback with its recovery. Saves killed by real processes are in
test_killed_saves.py."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from safetensors import SafetensorError

import model.atomic as atomic
import model.checkpoint as checkpoint
import model.exchange as exchange_module
import model.hf as hf
from model import build, load_checkpoint, save_checkpoint, to_hf
from model.atomic import RefusedTarget, atomic_directory, clean_stale_temporaries
from model.exchange import exchange
from specs import load_preset, verify_manifest
from specs.manifest import write_manifest


@pytest.fixture(scope="module")
def tiny():
    return build(load_preset("llama-tiny"))


def _write(target: Path, tag: str, **kwargs) -> None:
    """A minimal lmplanes checkpoint (one file and the manifest) written through atomic_directory."""
    with atomic_directory(target, **kwargs) as staging:
        (staging / "weights.bin").write_text(tag)
        write_manifest(staging)


def _tag(target: Path) -> str:
    assert verify_manifest(target) == []
    return (target / "weights.bin").read_text()


def _temporaries(parent: Path, name: str = "ckpt") -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith((f".{name}.tmp-", f".{name}.old-")))


def _tree(root: Path) -> dict[str, str | bytes]:
    def content(p: Path) -> str | bytes:
        return f"-> {os.readlink(p)}" if p.is_symlink() else "" if p.is_dir() else p.read_bytes()

    return {p.relative_to(root).as_posix(): content(p) for p in sorted(root.rglob("*"))}


# ------------------------------------------------------------------------------------------------- what is refused


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_file_is_refused(tmp_path, overwrite):
    target = tmp_path / "a.yaml"
    target.write_text("mine")
    with pytest.raises(RefusedTarget) as err:
        _write(target, "new", overwrite=overwrite)
    assert str(err.value) == f"{target}: is a file, not a checkpoint directory; refusing to replace it"
    assert isinstance(err.value, FileExistsError)
    assert _tree(tmp_path) == {"a.yaml": b"mine"}


@pytest.mark.parametrize("points_to", ["checkpoint", "file", "nothing"])
def test_a_symlink_is_refused_and_not_followed(tmp_path, points_to):
    real = tmp_path / "real"
    if points_to == "checkpoint":
        _write(real, "old")
    elif points_to == "file":
        real.write_text("mine")
    link = tmp_path / "ckpt"
    link.symlink_to(real)
    before = _tree(tmp_path)
    with pytest.raises(RefusedTarget, match=rf"ckpt: is a symbolic link \(to {real}\), not a checkpoint directory"):
        _write(link, "new", overwrite=True)
    assert link.is_symlink() and _tree(tmp_path) == before


def test_a_folder_of_other_files_is_refused(tmp_path, tiny):
    target = tmp_path / "out"
    (target / "data").mkdir(parents=True)
    (target / "data" / "x.bin").write_text("x")
    (target / "notes.txt").write_text("n")
    (target / "a.yaml").write_text("a")
    with pytest.raises(RefusedTarget) as err:
        save_checkpoint(tiny, target, overwrite=True)
    assert str(err.value) == (
        f"{target}: is not an lmplanes checkpoint (no MANIFEST.json) and holds 3 entries (a.yaml, data/, notes.txt); "
        "refusing to delete them"
    )
    (target / "b.txt").write_text("b")
    with pytest.raises(RefusedTarget, match=r"holds 4 entries \(a.yaml, b.txt, data/, \.\.\.\); refusing"):
        save_checkpoint(tiny, target, overwrite=True)
    assert set(_tree(target)) == {"a.yaml", "b.txt", "data", "data/x.bin", "notes.txt"}
    assert _temporaries(tmp_path, "out") == []


def test_a_checkpoint_holding_unlisted_entries_is_refused(tmp_path, tiny):
    target = save_checkpoint(tiny, tmp_path / "ckpt")
    (target / "notes.txt").write_text("mine")
    with pytest.raises(RefusedTarget) as err:
        save_checkpoint(tiny, target, overwrite=True)
    assert str(err.value) == (
        f"{target}: holds 1 entry not listed in its MANIFEST.json (notes.txt); refusing to delete it"
    )
    (target / "plots").mkdir()
    with pytest.raises(RefusedTarget, match=r"holds 2 entries not listed in its MANIFEST.json \(notes.txt, plots/\)"):
        save_checkpoint(tiny, target, overwrite=True)
    assert (target / "notes.txt").read_text() == "mine" and (target / "plots").is_dir()


def test_an_unlisted_file_inside_a_listed_folder_is_named(tmp_path):
    source = tmp_path / "src"
    (source / "train_state").mkdir(parents=True)
    (source / "train_state" / "optim.bin").write_text("o")
    write_manifest(source)
    (source / "train_state" / "notes.txt").write_text("mine")
    with pytest.raises(RefusedTarget, match=r"holds 1 entry not listed in its MANIFEST.json \(train_state/notes.txt\)"):
        _write(source, "new", overwrite=True)


def test_an_existing_checkpoint_needs_overwrite(tmp_path):
    target = tmp_path / "ckpt"
    _write(target, "old")
    with pytest.raises(FileExistsError, match=r"ckpt: already exists; pass overwrite=True to replace it"):
        _write(target, "new")
    _write(target, "new", overwrite=True)
    assert _tag(target) == "new" and _temporaries(tmp_path) == []


def test_an_empty_directory_is_a_target_without_overwrite(tmp_path, tiny):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "hf").mkdir()
    ours = save_checkpoint(tiny, tmp_path / "ckpt")
    assert verify_manifest(ours) == []
    to_hf(tiny, tmp_path / "hf")
    assert sorted(os.listdir(tmp_path / "hf")) == ["config.json", "model.safetensors"]
    assert _temporaries(tmp_path) == _temporaries(tmp_path, "hf") == []


def test_missing_parent_folders_are_created(tmp_path):
    _write(tmp_path / "runs" / "7" / "ckpt", "new")
    assert _tag(tmp_path / "runs" / "7" / "ckpt") == "new"


@pytest.mark.parametrize("spelling", [".", "./", "..", "../..", "{a}", "{a}/b/..", "/"])
def test_the_current_directory_its_ancestors_and_the_root_are_refused(tmp_path, monkeypatch, spelling, tiny):
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    (cwd / "notes.txt").write_text("mine")
    _write(tmp_path / "a" / "ckpt", "old")  # even a checkpoint beside us does not make ".." replaceable
    monkeypatch.chdir(cwd)
    before = _tree(tmp_path), sorted(os.listdir(tmp_path.parent))
    target = spelling.format(a=tmp_path / "a")
    with pytest.raises(RefusedTarget) as err:
        save_checkpoint(tiny, target, overwrite=True)
    reason = str(err.value)
    assert reason.startswith(f"{target}: is ") and reason.endswith("refusing to replace it")
    assert ("the filesystem root" if target == "/" else "current directory") in reason
    assert (_tree(tmp_path), sorted(os.listdir(tmp_path.parent))) == before  # no stray ..old-* or staging folder


# -------------------------------------------------------------------------------------------- Hugging Face targets


def test_to_hf_replaces_only_a_hugging_face_directory(tmp_path, tiny):
    target = to_hf(tiny, tmp_path / "hf")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"):
        (target / name).write_text("{}")
    to_hf(tiny, target, overwrite=True)
    assert sorted(os.listdir(target)) == ["config.json", "model.safetensors"]

    (target / "README.md").write_text("mine")
    with pytest.raises(RefusedTarget, match=r"hf: holds 1 entry that Hugging Face checkpoints do not hold \(README.md\)"):
        to_hf(tiny, target, overwrite=True)
    with pytest.raises(RefusedTarget, match=r"hf: is not an lmplanes checkpoint \(no MANIFEST.json\)"):
        save_checkpoint(tiny, target, overwrite=True)
    ours = save_checkpoint(tiny, tmp_path / "ckpt")
    with pytest.raises(RefusedTarget, match=r"ckpt: is not a Hugging Face checkpoint \(no config.json with a model_type\)"):
        to_hf(tiny, ours, overwrite=True)
    assert (target / "README.md").read_text() == "mine" and verify_manifest(ours) == []


# --------------------------------------------------------------------------------------- errors name the user's path


def test_a_real_write_failure_names_the_target_and_keeps_the_old_checkpoint(tmp_path, tiny):
    target = save_checkpoint(tiny, tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, limits[1]))
    try:
        with pytest.raises(OSError) as err:
            save_checkpoint(tiny, target, overwrite=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert err.value.errno == errno.EFBIG
    assert str(err.value) == f"[Errno {errno.EFBIG}] could not write checkpoint {target}: File too large"
    assert isinstance(err.value.__cause__, OSError) and isinstance(err.value.__cause__.__cause__, SafetensorError)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before and _temporaries(tmp_path) == []


@pytest.mark.parametrize("writer", ["save_checkpoint", "to_hf"])
def test_no_space_left_names_the_target(tmp_path, tiny, monkeypatch, writer):
    def full(*args, **kwargs):  # what safetensors raises on ENOSPC
        raise SafetensorError('Error while serializing: I/O error: No space left on device (os error 28) at path "x"')

    monkeypatch.setattr(checkpoint if writer == "save_checkpoint" else hf, "save_file", full)
    target = tmp_path / "out"
    with pytest.raises(OSError) as err:
        (save_checkpoint if writer == "save_checkpoint" else to_hf)(tiny, target)
    assert err.value.errno == errno.ENOSPC
    assert err.value.strerror == f"could not write checkpoint {target}: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_a_permission_error_creating_the_staging_folder_names_the_target(tmp_path, monkeypatch):
    def denied(prefix, dir):  # what mkdtemp raises in a read-only folder (tests may run as root)
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}abcdefgh")

    monkeypatch.setattr(atomic.tempfile, "mkdtemp", denied)
    with pytest.raises(PermissionError) as err:
        _write(tmp_path / "ckpt", "new")
    assert str(err.value) == f"[Errno 13] could not write checkpoint {tmp_path / 'ckpt'}: Permission denied"
    assert ".tmp-" not in str(err.value)


# ------------------------------------------------------------------------------------------------ stale temporaries


def _plant(parent: Path) -> dict[str, Path]:
    """Stale temporaries of "ckpt", and look-alikes that are not, beside a checkpoint at parent/ckpt."""
    _write(parent / "ckpt", "current")
    made = {}
    for name in (".ckpt.tmp-abcdefgh", ".ckpt.old-0123_xyz", ".ckpt2.tmp-abcdefgh", ".ckpt.tmp-abc", "ckpt.tmp-abcdefgh"):
        (parent / name).mkdir()
        (parent / name / "x").write_text(name)
        made[name] = parent / name
    (parent / ".ckpt.tmp-filefile").write_text("a file, not a staging folder")
    (parent / "elsewhere").mkdir()
    (parent / "elsewhere" / "precious").write_text("p")
    (parent / ".ckpt.tmp-linklink").symlink_to(parent / "elsewhere")
    return made


def test_stale_temporaries_of_the_target_and_nothing_else_are_removed(tmp_path, caplog):
    made = _plant(tmp_path)
    with caplog.at_level(logging.WARNING, logger="model"):
        removed = clean_stale_temporaries(tmp_path / "ckpt")
    assert sorted(removed) == [made[".ckpt.old-0123_xyz"], made[".ckpt.tmp-abcdefgh"]]
    assert "removed 2 stale temporaries of" in caplog.text and ".ckpt.tmp-abcdefgh" in caplog.text
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".ckpt.tmp-abc", ".ckpt.tmp-filefile", ".ckpt.tmp-linklink", ".ckpt2.tmp-abcdefgh", "ckpt",
                    "ckpt.tmp-abcdefgh", "elsewhere"]
    assert (tmp_path / "elsewhere" / "precious").read_text() == "p" and _tag(tmp_path / "ckpt") == "current"
    assert clean_stale_temporaries(tmp_path / "ckpt") == []


def test_the_next_save_cleans_up_and_says_so(tmp_path, tiny, caplog):
    target = save_checkpoint(tiny, tmp_path / "ckpt")
    (tmp_path / ".ckpt.tmp-zzzzzzzz" / "sub").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="model"):
        save_checkpoint(tiny, target, overwrite=True)
    assert f"removed 1 stale temporary of {target}" in caplog.text and ".ckpt.tmp-zzzzzzzz" in caplog.text
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_a_temporary_locked_by_this_process_is_kept(tmp_path):
    staging = tmp_path / ".ckpt.tmp-abcdefgh"
    staging.mkdir()
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: the cleaner's own open() conflicts with it
    try:
        assert clean_stale_temporaries(tmp_path / "ckpt") == []
        _write(tmp_path / "ckpt", "new")
        assert staging.is_dir()
    finally:
        os.close(fd)
    assert clean_stale_temporaries(tmp_path / "ckpt") == [staging]


_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_a_temporary_owned_by_a_live_process_is_kept_until_it_dies(tmp_path):
    staging = tmp_path / ".ckpt.tmp-abcdefgh"
    staging.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(staging)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert clean_stale_temporaries(tmp_path / "ckpt") == [] and staging.is_dir()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert clean_stale_temporaries(tmp_path / "ckpt") == [staging]  # the kernel dropped the dead owner's lock


def test_a_writer_whose_staging_folder_is_cleaned_before_it_locks_it_starts_over(tmp_path, monkeypatch):
    real = atomic.tempfile.mkdtemp
    made = []

    def mkdtemp_then_a_cleaner_strikes(prefix, dir):
        path = real(prefix=prefix, dir=dir)
        made.append(path)
        if len(made) == 1:
            os.rmdir(path)  # between mkdtemp and the writer's flock the folder is unowned
        return path

    monkeypatch.setattr(atomic.tempfile, "mkdtemp", mkdtemp_then_a_cleaner_strikes)
    _write(tmp_path / "ckpt", "new")
    assert len(made) == 2 and _tag(tmp_path / "ckpt") == "new" and os.listdir(tmp_path) == ["ckpt"]


def test_a_writer_waits_for_a_live_writer_that_has_moved_the_target_aside(tmp_path, monkeypatch):
    aside, _ = _killed_between_renames(tmp_path)
    fd = os.open(aside, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as if its writer were alive, between its two renames
    monkeypatch.setattr(atomic, "_WAIT_S", 0.2)
    try:
        with pytest.raises(BlockingIOError, match=r"could not write checkpoint .*ckpt: another process has been replacing it"):
            _write(tmp_path / "ckpt", "new")
    finally:
        os.close(fd)
    assert not (tmp_path / "ckpt").exists() and aside.is_dir() and _tag(aside) == "old"


def test_a_write_longer_than_the_wait_limit_still_publishes(tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    _write(target, "old")
    monkeypatch.setattr(atomic, "_WAIT_S", 0.01)  # the limit bounds waiting for others, not our own writing
    with atomic_directory(target, overwrite=True) as staging:
        time.sleep(0.05)
        (staging / "weights.bin").write_text("new")
        write_manifest(staging)
    assert _tag(target) == "new"


def test_a_file_added_to_the_target_during_the_write_is_not_deleted(tmp_path):
    target = tmp_path / "ckpt"
    _write(target, "old")
    with pytest.raises(RefusedTarget, match=r"holds 1 entry not listed in its MANIFEST.json \(notes.txt\)"):
        with atomic_directory(target, overwrite=True) as staging:
            (staging / "weights.bin").write_text("new")
            write_manifest(staging)
            (target / "notes.txt").write_text("written meanwhile")
    assert (target / "notes.txt").read_text() == "written meanwhile" and _temporaries(tmp_path) == []


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_concurrent_writers_of_one_target_never_clean_each_other_up(tmp_path, monkeypatch, mode):
    if mode == "fallback":
        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    target = tmp_path / "ckpt"
    _write(target, "first")
    errors = []

    def writer(tag: str) -> None:
        try:
            for _ in range(15):
                _write(target, tag, overwrite=True)
        except BaseException as exc:  # collected: an exception in a thread would otherwise go unseen
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and _tag(target) in "abc" and os.listdir(tmp_path) == ["ckpt"]


# ----------------------------------------------------------------------------------- exchange and its fallback


def test_exchange_swaps_two_directories(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    if not exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("no renameat2(RENAME_EXCHANGE) on this platform or filesystem")
    assert os.listdir(tmp_path / "b") == ["x"] and os.listdir(tmp_path / "a") == []
    with pytest.raises(FileNotFoundError):
        exchange(tmp_path / "missing", tmp_path / "a")


def test_exchange_reports_a_platform_without_it(tmp_path, monkeypatch):
    monkeypatch.setattr(exchange_module, "_RENAMEAT2", None)
    assert exchange(tmp_path, tmp_path) is False


@pytest.fixture
def no_exchange(monkeypatch):
    monkeypatch.setattr(atomic, "exchange", lambda a, b: False)


def test_fallback_replaces_in_two_renames(tmp_path, no_exchange, tiny):
    target = save_checkpoint(tiny, tmp_path / "ckpt", max_shard_bytes=100_000)
    save_checkpoint(tiny, target, overwrite=True)
    assert verify_manifest(target) == [] and not list(target.glob("model-*")) and os.listdir(tmp_path) == ["ckpt"]


def test_fallback_puts_the_old_checkpoint_back_when_the_second_rename_fails(tmp_path, no_exchange, monkeypatch):
    target = tmp_path / "ckpt"
    _write(target, "old")
    real = os.rename

    def rename(src, dst):
        if ".ckpt.tmp-" in str(src):
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(OSError, match=f"could not write checkpoint {target}: Input/output error"):
        _write(target, "new", overwrite=True)
    monkeypatch.undo()
    assert _tag(target) == "old" and _temporaries(tmp_path) == []


def _killed_between_renames(parent: Path) -> tuple[Path, Path]:
    """The state a fallback replacement leaves when it dies after moving the old target aside."""
    _write(parent / "ckpt", "old")
    aside = parent / ".ckpt.old-abcdefgh"
    os.rename(parent / "ckpt", aside)
    _write(parent / "new", "new")
    staging = parent / ".ckpt.tmp-abcdefgh"
    os.rename(parent / "new", staging)
    return aside, staging


def test_a_target_missing_after_a_killed_fallback_is_restored(tmp_path, caplog):
    aside, staging = _killed_between_renames(tmp_path)
    with caplog.at_level(logging.WARNING, logger="model"):
        assert clean_stale_temporaries(tmp_path / "ckpt") == [staging]
    assert "restored" in caplog.text and aside.name in caplog.text
    assert _tag(tmp_path / "ckpt") == "old" and os.listdir(tmp_path) == ["ckpt"]


def test_the_next_save_restores_before_it_decides(tmp_path, tiny):
    _killed_between_renames(tmp_path)
    with pytest.raises(FileExistsError, match="already exists"):  # the previous checkpoint is back
        _write(tmp_path / "ckpt", "new")
    assert _tag(tmp_path / "ckpt") == "old"
    _write(tmp_path / "ckpt", "new", overwrite=True)
    assert _tag(tmp_path / "ckpt") == "new" and os.listdir(tmp_path) == ["ckpt"]


def test_a_moved_aside_checkpoint_owned_by_a_live_writer_is_left_alone(tmp_path):
    aside, staging = _killed_between_renames(tmp_path)
    fd = os.open(aside, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert clean_stale_temporaries(tmp_path / "ckpt") == [staging]
        assert not (tmp_path / "ckpt").exists() and aside.is_dir()
    finally:
        os.close(fd)


def test_load_after_a_real_save_over_an_empty_directory(tmp_path, tiny):
    (tmp_path / "ckpt").mkdir()
    loaded = load_checkpoint(save_checkpoint(tiny, tmp_path / "ckpt"))
    assert loaded.state_dict().keys() == tiny.state_dict().keys()
