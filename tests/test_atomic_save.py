"""Every save is all or nothing (clvp/atomic.py): a save that fails or is killed part-way leaves the old
content loading bit-identical, a finished one leaves exactly the new content (plus the folder's other
files), and nothing is left behind."""
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clvp import atomic
from clvp.configuration import ClvpConfig, tiny_config
from clvp.convert import convert_tortoise
from clvp.feature_extraction import ClvpFeatureExtractor
from clvp.modeling import ClvpModelForConditionalGeneration
from clvp.processing import ClvpProcessor
from clvp.tokenization import ClvpTokenizer

from conftest import ROOT
from test_convert import tortoise_autoregressive, tortoise_clvp

Model = ClvpModelForConditionalGeneration


def tiny_model(seed: int) -> Model:
    torch.manual_seed(seed)
    return Model(tiny_config()).eval()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def assert_bit_identical(model: Model, state: dict[str, torch.Tensor]):
    ours = model.state_dict()
    assert set(ours) == set(state)
    for key, value in state.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        assert ours[key].contiguous().numpy().tobytes() == value.contiguous().numpy().tobytes(), key


def original_state(model: Model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def stall_or_fail(how):
    """A stand-in for a weights writer: writes part of the file, then ``how()`` (raise, or sleep)."""
    def writer(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"\0" * 100_000)
        how()
    return writer


def raise_disk_full():
    raise OSError(28, "No space left on device (simulated)")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------ the model
_STALLING_SAVE = r"""
import sys, time
import safetensors.torch
import torch
from clvp.configuration import tiny_config
from clvp.modeling import ClvpModelForConditionalGeneration

def stall(state, filename, metadata=None):
    with open(filename, "wb") as f:
        f.write(b"\0" * 100_000)
        f.flush()
    print("STALLED", flush=True)
    time.sleep(600)

safetensors.torch.save_file = stall
torch.manual_seed(1)
ClvpModelForConditionalGeneration(tiny_config()).save_pretrained(sys.argv[1])
"""


def test_killed_save_keeps_the_old_checkpoint_and_the_next_save_cleans_up(tmp_path):
    folder = tmp_path / "ckpt"
    old = tiny_model(0)
    old.save_pretrained(folder)
    before = snapshot(folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _STALLING_SAVE, str(folder)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 180)
        line = proc.stdout.readline() if ready else b""
        assert line.strip() == b"STALLED", proc.stderr.read().decode()[-2000:] if proc.poll() is not None else line
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    # the killed save's temporary folder is beside the target, with its half-written weights
    left = leftovers(folder)
    assert left and all(name.startswith(f".ckpt.saving-{proc.pid}-") for name in left), left
    assert (tmp_path / left[0] / "model.safetensors").stat().st_size == 100_000
    # the target is untouched and loads as the old model, bit for bit
    assert snapshot(folder) == before
    assert_bit_identical(Model.from_pretrained(folder), original_state(old))
    # the next save of that target removes the leftover, and the folder holds the new model
    new = tiny_model(2)
    new.save_pretrained(folder)
    assert leftovers(folder) == []
    assert_bit_identical(Model.from_pretrained(folder), original_state(new))


@pytest.mark.parametrize("safe", [True, False])
def test_failed_save_keeps_the_old_checkpoint(tmp_path, monkeypatch, safe):
    folder = tmp_path / "ckpt"
    old = tiny_model(0)
    old.save_pretrained(folder, safe_serialization=safe)
    (folder / "README.md").write_text("my notes\n")
    before = snapshot(folder)
    if safe:
        import safetensors.torch
        monkeypatch.setattr(safetensors.torch, "save_file", stall_or_fail(raise_disk_full))
    else:
        monkeypatch.setattr(torch, "save", stall_or_fail(raise_disk_full))
    with pytest.raises(OSError, match="simulated"):
        tiny_model(1).save_pretrained(folder, safe_serialization=safe)
    monkeypatch.undo()
    assert snapshot(folder) == before  # config.json too: no new config with old weights
    assert leftovers(folder) == []
    assert_bit_identical(Model.from_pretrained(folder), original_state(old))


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch
    monkeypatch.setattr(safetensors.torch, "save_file", stall_or_fail(raise_disk_full))
    with pytest.raises(OSError, match="simulated"):
        tiny_model(0).save_pretrained(tmp_path / "new" / "ckpt")
    assert not (tmp_path / "new" / "ckpt").exists() and leftovers(tmp_path / "new" / "ckpt") == []


@pytest.mark.parametrize("first, second", [(True, False), (False, True)])
def test_resave_in_the_other_format_gives_the_new_weights(tmp_path, first, second):
    folder = tmp_path / "ckpt"
    tiny_model(0).save_pretrained(folder, safe_serialization=first)
    new = tiny_model(1)
    new.save_pretrained(folder, safe_serialization=second)
    names = set(os.listdir(folder))
    # generation_config.json: written beside config.json by models that generate, as transformers does
    assert names == {"config.json", "generation_config.json", "model.safetensors" if second else "pytorch_model.bin"}
    assert_bit_identical(Model.from_pretrained(folder), original_state(new))
    assert leftovers(folder) == []


@pytest.mark.parametrize("safe", [True, False])
def test_stale_sharded_weights_are_removed(tmp_path, safe):
    folder = tmp_path / "ckpt"
    tiny_model(0).save_pretrained(folder)
    for index, shard in (("model.safetensors.index.json", "model-00001-of-00002.safetensors"),
                         ("pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin")):
        (folder / index).write_text(json.dumps({"weight_map": {"a": shard, "b": "odd-shard-name.bin"}}))
        (folder / shard).write_bytes(b"x")
        (folder / "odd-shard-name.bin").write_bytes(b"x")
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"x")  # not in the index: by its name
    new = tiny_model(1)
    new.save_pretrained(folder, safe_serialization=safe)
    assert set(os.listdir(folder)) == {"config.json", "generation_config.json",
                                       "model.safetensors" if safe else "pytorch_model.bin"}
    assert_bit_identical(Model.from_pretrained(folder), original_state(new))


def test_model_save_keeps_the_tokenizer_and_preprocessor_files(tmp_path):
    folder = tmp_path / "ckpt"
    processor = ClvpProcessor(ClvpFeatureExtractor(mel_norms="tortoise"), ClvpTokenizer(text_normalization="tortoise"))
    processor.save_pretrained(folder)
    (folder / "notes").mkdir()
    (folder / "notes" / "run.txt").write_text("lr 1e-4\n")
    os.symlink("notes/run.txt", folder / "link.txt")
    others = snapshot(folder)
    new = tiny_model(1)
    new.save_pretrained(folder)
    assert {k: v for k, v in snapshot(folder).items() if k in others} == others
    assert os.readlink(folder / "link.txt") == "notes/run.txt"
    assert_bit_identical(Model.from_pretrained(folder), original_state(new))
    back = ClvpProcessor.from_pretrained(folder)
    assert back.tokenizer.text_normalization == "tortoise"
    assert back.feature_extractor.mel_norms == processor.feature_extractor.mel_norms
    # and the other way round: the processor's save keeps the model
    ClvpProcessor().save_pretrained(folder)
    assert_bit_identical(Model.from_pretrained(folder), original_state(new))
    assert ClvpProcessor.from_pretrained(folder).tokenizer.text_normalization == "hf"
    assert leftovers(folder) == []


def test_save_into_the_working_folder(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    tiny_model(0).save_pretrained(folder)
    monkeypatch.chdir(folder)
    new = tiny_model(1)
    new.save_pretrained(".")
    assert os.path.samefile(os.getcwd(), folder)  # still a live folder, the new one
    assert_bit_identical(Model.from_pretrained("."), original_state(new))
    assert leftovers(folder) == []


# ------------------------------------------------------------------------------ the mechanism
def test_existing_folders_are_swapped_with_renameat2_where_available(tmp_path, monkeypatch):
    calls = []
    real = atomic._exchange
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: calls.append(real(a, b)) or calls[-1])
    folder = tmp_path / "fe"
    ClvpFeatureExtractor().save_pretrained(folder)
    assert calls == []  # a new target: one rename
    ClvpFeatureExtractor(padding_value=1.0).save_pretrained(folder)
    assert len(calls) == 1
    if sys.platform.startswith("linux") and atomic.exchange_supported():
        assert calls == [True]
    assert ClvpFeatureExtractor.from_pretrained(folder).padding_value == 1.0


def test_fallback_without_exchange(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_exchange_works", False)
    folder = tmp_path / "ckpt"
    tiny_model(0).save_pretrained(folder)
    ClvpTokenizer().save_pretrained(folder)
    new = tiny_model(1)
    new.save_pretrained(folder)
    assert_bit_identical(Model.from_pretrained(folder), original_state(new))
    assert ClvpTokenizer.from_pretrained(folder).get_vocab() == ClvpTokenizer().get_vocab()
    assert leftovers(folder) == []


def test_a_fallback_killed_between_its_renames_is_undone_by_the_next_save(tmp_path):
    folder = tmp_path / "ckpt"
    old = tiny_model(0)
    old.save_pretrained(folder)
    ClvpTokenizer().save_pretrained(folder)
    pid = dead_pid()
    # what a killed fallback swap leaves: the old folder renamed aside, the new one not yet in place
    os.rename(folder, tmp_path / f".ckpt.replaced-{pid}-0a1b2c3d")
    (tmp_path / f".ckpt.saving-{pid}-4e5f6a7b").mkdir()
    ClvpFeatureExtractor().save_pretrained(folder)
    assert leftovers(folder) == []
    assert_bit_identical(Model.from_pretrained(folder), original_state(old))  # the old content is back
    assert (folder / "vocab.json").is_file() and (folder / "preprocessor_config.json").is_file()


def test_leftovers_of_live_saves_are_kept(tmp_path):
    folder = tmp_path / "fe"
    live = tmp_path / f".fe.saving-{os.getpid()}-0123abcd"  # this process: alive
    live.mkdir()
    ClvpFeatureExtractor().save_pretrained(folder)
    assert live.is_dir()


def test_permissions_are_those_of_open(tmp_path):
    old_umask = os.umask(0o027)
    try:
        with open(tmp_path / "reference", "w") as f:
            f.write("x")
        file_mode = (tmp_path / "reference").stat().st_mode & 0o7777
        os.mkdir(tmp_path / "reference_dir")
        dir_mode = (tmp_path / "reference_dir").stat().st_mode & 0o7777
        model, tok, fe = tiny_model(0), ClvpTokenizer(pad_token="<pad>"), ClvpFeatureExtractor()
        for twice in (False, True):  # a new folder, then an existing one
            model.save_pretrained(tmp_path / "safe")
            model.save_pretrained(tmp_path / "bin", safe_serialization=False)
            tok.save_pretrained(tmp_path / "tok")
            fe.save_pretrained(tmp_path / "fe")
            ClvpProcessor(fe, tok).save_pretrained(tmp_path / "proc")
            tiny_config().save_pretrained(tmp_path / "config")
            ClvpConfig().to_json_file(tmp_path / "config" / "alone.json")
            fe.to_json_file(tmp_path / "fe" / "alone.json")
        for name in ("safe", "bin", "tok", "fe", "proc", "config"):
            assert (tmp_path / name).stat().st_mode & 0o7777 == dir_mode, name
            for path in (tmp_path / name).iterdir():
                assert path.stat().st_mode & 0o7777 == file_mode, path
        # an existing folder keeps its own permissions
        os.chmod(tmp_path / "safe", 0o711)
        model.save_pretrained(tmp_path / "safe")
        assert (tmp_path / "safe").stat().st_mode & 0o7777 == 0o711
    finally:
        os.umask(old_umask)


@pytest.mark.parametrize("save", [
    lambda p: tiny_model(0).save_pretrained(p),
    lambda p: ClvpTokenizer().save_pretrained(p),
    lambda p: ClvpFeatureExtractor().save_pretrained(p),
    lambda p: ClvpProcessor().save_pretrained(p),
    lambda p: tiny_config().save_pretrained(p),
], ids=["model", "tokenizer", "feature_extractor", "processor", "config"])
def test_a_file_as_target_is_refused_by_name(tmp_path, save):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    with pytest.raises(ValueError, match="taken"):
        save(target)
    assert target.read_text() == "not a folder"
    with pytest.raises(ValueError, match="taken"):
        save(target / "below")
    assert leftovers(target) == []


def test_an_unwritable_parent_is_refused_by_name_before_any_work(tmp_path, monkeypatch):
    # (a real read-only folder cannot stop root, which CI runs as: the permission check is simulated)
    monkeypatch.setattr(atomic.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match="ckpt") as err:
        tiny_model(0).save_pretrained(tmp_path / "ckpt")
    assert err.value.filename == str(tmp_path)
    assert os.listdir(tmp_path) == []


def test_a_mount_point_target_is_saved_file_by_file(tmp_path, monkeypatch):
    folder = tmp_path / "mnt"
    tiny_model(0).save_pretrained(folder)
    ClvpTokenizer().save_pretrained(folder)
    real = os.path.realpath(folder)
    monkeypatch.setattr(atomic, "_is_mount_point", lambda p: os.path.realpath(p) == real)
    new = tiny_model(1)
    with pytest.warns(RuntimeWarning, match="mount point"):
        new.save_pretrained(folder, safe_serialization=False)
    assert_bit_identical(Model.from_pretrained(folder), original_state(new))
    assert not (folder / "model.safetensors").exists() and (folder / "vocab.json").is_file()
    assert not [n for n in os.listdir(folder) if n.startswith(".")] and leftovers(folder) == []


def test_a_mount_point_inside_the_target_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    (folder / "data").mkdir(parents=True)
    monkeypatch.setattr(atomic, "_mountinfo", lambda: {os.path.realpath(folder / "data")})
    with pytest.raises(ValueError, match="mount point"):
        tiny_model(0).save_pretrained(folder)
    assert os.listdir(folder) == ["data"] and leftovers(folder) == []


# ------------------------------------------------------------------------------ the other saves
def test_tokenizer_save_failing_part_way(tmp_path, monkeypatch):
    import clvp.tokenization as tokenization

    folder = tmp_path / "tok"
    ClvpTokenizer(pad_token="<pad>", text_normalization="tortoise").save_pretrained(folder)
    before = snapshot(folder)

    def half_then_fail(directory, *args, **kwargs):
        (Path(directory) / "vocab.json").write_text('{"a": ')
        raise_disk_full()

    monkeypatch.setattr(tokenization, "write_vocabulary", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        ClvpTokenizer().save_pretrained(folder)
    assert snapshot(folder) == before and leftovers(folder) == []
    monkeypatch.undo()
    back = ClvpTokenizer.from_pretrained(folder)
    assert back.text_normalization == "tortoise" and len(back) == 257


def test_tokenizer_resave_drops_a_stale_added_tokens_file(tmp_path):
    folder = tmp_path / "tok"
    ClvpTokenizer(pad_token="<pad>").save_pretrained(folder)
    assert (folder / "added_tokens.json").is_file()
    files = ClvpTokenizer(bos_token="[STOP]", eos_token="[STOP]").save_pretrained(folder)  # adds no token
    assert not (folder / "added_tokens.json").exists()
    assert len(ClvpTokenizer.from_pretrained(folder)) == 255
    assert all(os.path.dirname(p) == str(folder) for p in files)  # paths in the target, not the staging folder


def test_feature_extractor_save_failing_part_way(tmp_path, monkeypatch):
    folder = tmp_path / "fe"
    ClvpFeatureExtractor(padding_value=1.0).save_pretrained(folder)
    before = snapshot(folder)

    def half_then_fail(self, path):
        Path(path).write_text('{"feature_size": ')
        raise_disk_full()

    monkeypatch.setattr(ClvpFeatureExtractor, "to_json_file", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        ClvpFeatureExtractor().save_pretrained(folder)
    assert snapshot(folder) == before and leftovers(folder) == []
    monkeypatch.undo()
    assert ClvpFeatureExtractor.from_pretrained(folder).padding_value == 1.0


def test_standalone_json_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    tiny_config().to_json_file(path)
    before = path.read_bytes()

    def fail_replace(src, dst):
        raise_disk_full()

    monkeypatch.setattr(atomic.os, "replace", fail_replace)
    with pytest.raises(OSError, match="simulated"):
        ClvpConfig().to_json_file(path)
    with pytest.raises(OSError, match="simulated"):
        ClvpFeatureExtractor().to_json_file(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["config.json"]


def test_processor_save_failing_part_way(tmp_path, monkeypatch):
    folder = tmp_path / "proc"
    ClvpProcessor(ClvpFeatureExtractor(padding_value=1.0), ClvpTokenizer(pad_token="<pad>")).save_pretrained(folder)
    before = snapshot(folder)

    def fail(self, directory):
        (Path(directory) / "vocab.json").write_text("{")
        raise_disk_full()

    monkeypatch.setattr(ClvpTokenizer, "save_pretrained", fail)
    with pytest.raises(OSError, match="simulated"):
        ClvpProcessor().save_pretrained(folder)  # the feature extractor's part was written by then
    assert snapshot(folder) == before and leftovers(folder) == []
    monkeypatch.undo()
    back = ClvpProcessor.from_pretrained(folder)
    assert back.feature_extractor.padding_value == 1.0 and len(back.tokenizer) == 257


def test_processor_save_returns_paths_in_the_target(tmp_path):
    files = ClvpProcessor().save_pretrained(tmp_path / "proc")
    assert files and all(os.path.dirname(p) == str(tmp_path / "proc") and os.path.isfile(p) for p in files)


def test_convert_tortoise_failing_part_way(tmp_path, monkeypatch):
    import safetensors.torch

    ar, cl = tmp_path / "autoregressive.pth", tmp_path / "clvp2.pth"
    torch.save(tortoise_autoregressive(), ar)
    torch.save(tortoise_clvp(), cl)
    out = tmp_path / "out"
    first = convert_tortoise(ar, cl, out)
    state = original_state(first)
    (out / "preprocessor_config.json").write_text("{}\n")  # a file the conversion does not write
    before = snapshot(out)
    changed = tortoise_clvp()
    changed["temperature"] = torch.tensor(3.5)
    torch.save(changed, cl)
    monkeypatch.setattr(safetensors.torch, "save_file", stall_or_fail(raise_disk_full))
    with pytest.raises(OSError, match="simulated"):
        convert_tortoise(ar, cl, out)
    monkeypatch.undo()
    assert snapshot(out) == before and leftovers(out) == []
    assert_bit_identical(Model.from_pretrained(out), state)
    second = convert_tortoise(ar, cl, out)  # and a finished one replaces it, keeping the other file
    assert_bit_identical(Model.from_pretrained(out), original_state(second))
    assert (out / "preprocessor_config.json").read_text() == "{}\n"


def test_convert_tortoise_refuses_a_file_as_output_before_reading_checkpoints(tmp_path):
    target = tmp_path / "out"
    target.write_text("x")
    with pytest.raises(ValueError, match="out"):
        convert_tortoise(tmp_path / "missing_ar.pth", tmp_path / "missing_clvp.pth", target)
