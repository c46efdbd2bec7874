"""No file a user receives can run code on load: every unpickling site of src/ is listed here with the reason
it is safe (a new one fails the inventory test), and each torch site is fed a pickle payload whose
unpickling would create a marker file (the CLI sites are cases of tests/test_errors.py)."""

from __future__ import annotations

import argparse
import collections
import pathlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from splatdistill.errors import UserError
from splatdistill.safe_load import NUMPY_ARRAYS, load_torch_file

SRC = Path(__file__).resolve().parents[1] / "src" / "splatdistill"

#: every place src/ may turn bytes into Python objects, as (file, the line's code) -> why it is safe
SITES = {
    (
        "safe_load.py",
        'obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mapped)',
    ): "the one torch.load: torch's restricted unpickler (tensors, plain containers) plus the caller's exact "
    "allow-list; foreign files get inert stand-ins for every other global",
    (
        "eval/benchmarks/nyuv2.py",
        "class _ArrayUnpickler(pickle.Unpickler):",
    ): "NYUv2 normals (a gzipped pickle): find_class allows only NumPy's array rebuilders, OrderedDict, _codecs.encode",
    (
        "eval/benchmarks/nyuv2.py",
        'data = _ArrayUnpickler(fh, encoding="latin1").load()',
    ): "the restricted unpickler above",
    ("eval/benchmarks/scannet1500.py", "with np.load(path, allow_pickle=False) as z:"): "NumPy refuses object arrays",
    ("data/io.py", "with np.load(path) as z:"): "np.load's default is allow_pickle=False (object arrays refused)",
    ("data/io.py", "return np.load(path, allow_pickle=False)"): "NumPy refuses object arrays",
    ("data/io.py", 'arr = np.load(path, mmap_mode="r", allow_pickle=False)'): "NumPy refuses object arrays",
    (
        "render/ply.py",
        "feats = torch.from_numpy(np.load(feat_path)).double()",
    ): "np.load's default is allow_pickle=False (object arrays refused)",
    (
        "data/rooms/assets.py",
        'with np.load(FURNITURE_DIR / f"{key}.npz") as z:',
    ): "the package's own furniture meshes; allow_pickle=False by default anyway",
}
#: what turns bytes into objects; np.load counts (it unpickles when allow_pickle=True)
PATTERN = re.compile(
    r"torch\.load\(|torch\.jit\.load|pickle\.(load|loads|Unpickler)\b|Unpickler\(|np\.load\("
    r"|numpy\.load\(|yaml\.(unsafe_)?load\(|yaml\.(Unsafe|Full)?Loader|marshal\.loads?\(|dill\.|joblib\."
)


def _sites() -> set[tuple[str, str]]:
    found = set()
    for path in SRC.rglob("*.py"):
        for line in path.read_text().splitlines():
            code = line.split(" #", 1)[0].strip()
            if PATTERN.search(code) and not code.startswith(("#", '"', "``", "-")):
                found.add((str(path.relative_to(SRC)), code))
    return found


def test_every_unpickling_site_in_src_is_listed_with_why_it_is_safe():
    found = _sites()
    new = sorted(found - SITES.keys())
    assert not new, f"new unpickling site(s): route torch files through splatdistill.safe_load, or list why safe: {new}"
    gone = sorted(SITES.keys() - found)
    assert not gone, f"listed site(s) no longer in src/ (update SITES): {gone}"


def test_no_unrestricted_load_anywhere_in_src():
    bad = []
    for path in SRC.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"weights_only\s*=\s*False|allow_pickle\s*=\s*True|pickle\.loads?\(", line):
                bad.append(f"{path.relative_to(SRC)}:{i}: {line.strip()}")
    assert not bad, bad


def test_every_torch_file_reader_goes_through_the_safe_loader():
    """The sites that read files a user may receive, and the allow-list each passes."""
    calls = {str(p.relative_to(SRC)): re.findall(r"load_torch_file\((.*)", p.read_text()) for p in SRC.rglob("*.py")}
    calls = {k: v for k, v in calls.items() if v and k != "safe_load.py"}
    assert sorted(calls) == [
        "backbones/checkpoints.py",
        "baselines/fit3d.py",
        "commands/train.py",
        "distill/checkpoint.py",
        "lifters/mvsplat.py",
        "lifters/train_predictor.py",
    ]
    assert "foreign=True" in calls["lifters/mvsplat.py"][0]  # only MVSplat's Lightning files get stand-ins
    assert all("foreign" not in c for k, v in calls.items() if k != "lifters/mvsplat.py" for c in v)


class _Payload:
    """Pickles as ``exec(code)``: loading it with plain pickle would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def payload_file(path: Path, marker: Path, base: dict | None = None) -> Path:
    """A torch file holding ``base`` plus the payload (the helper tests/test_errors.py uses too)."""
    torch.save({**(base or {}), "extra": _Payload(marker)}, path)
    return path


@pytest.mark.parametrize("what,allow", [("training checkpoint", NUMPY_ARRAYS), ("weights file", ())])
def test_a_payload_is_refused_by_name_and_never_runs(tmp_path, what, allow):
    marker = tmp_path / "MARKER"
    f = payload_file(tmp_path / "x.pt", marker, {"w": torch.ones(2)})
    with pytest.raises(UserError, match=r"refusing to load this .*builtins\.exec.*nothing was loaded"):
        load_torch_file(f, what, allow=allow)
    assert not marker.exists()
    # plain pickle would run it: the check above can fail
    torch.load(f, weights_only=False)
    assert marker.read_text() == "ran"


def test_the_numpy_allow_list_rebuilds_the_rng_state_exactly(tmp_path):
    np.random.seed(5)
    state = {"numpy": np.random.get_state(), "python": (3, tuple(range(5)), None), "t": torch.arange(3)}
    torch.save(state, tmp_path / "c.pt")
    back = load_torch_file(tmp_path / "c.pt", "training checkpoint", allow=NUMPY_ARRAYS)
    assert back["numpy"][0] == "MT19937" and np.array_equal(back["numpy"][1], state["numpy"][1])
    assert back["python"] == state["python"] and torch.equal(back["t"], state["t"])
    with pytest.raises(UserError, match=r"numpy"):  # without the allow-list the arrays are refused
        load_torch_file(tmp_path / "c.pt", "weights file")


def test_fit3d_field_cache_with_a_payload_is_refused(tmp_path):
    from splatdistill.baselines.fit3d import FeatureField

    marker = tmp_path / "MARKER"
    f = payload_file(tmp_path / "field.pt", marker, {"version": 1, "state": {}})
    with pytest.raises(UserError, match=r"field.pt: refusing to load this fit3d field cache"):
        FeatureField.load(f)
    assert not marker.exists()


def test_backbone_weights_with_a_payload_are_refused(tmp_path):
    from splatdistill.backbones.checkpoints import read_state_dict

    marker = tmp_path / "MARKER"
    f = payload_file(tmp_path / "w.pth", marker, {"blocks.0.attn.qkv.weight": torch.ones(3, 3)})
    with pytest.raises(UserError, match=r"w.pth: refusing to load this weights file"):
        read_state_dict(f)
    assert not marker.exists()


def test_a_lightning_style_checkpoint_gives_its_tensors_and_runs_nothing(tmp_path):
    """MVSplat's re10k.ckpt is a Lightning checkpoint: hyper-parameters, loop and callback state hold
    objects of other libraries. ``foreign=True`` keeps the tensors, and even a payload stays inert."""
    omegaconf = pytest.importorskip("omegaconf")
    marker = tmp_path / "MARKER"
    enc = {"encoder.backbone.weight": torch.randn(4, 3), "encoder.head.bias": torch.randn(4)}
    ckpt = {
        "epoch": 3,
        "global_step": 300000,
        "pytorch-lightning_version": "2.0.0",
        "state_dict": collections.OrderedDict(enc),
        "hyper_parameters": {
            "cfg": omegaconf.OmegaConf.create({"model": {"d": 128}}),
            "args": argparse.Namespace(lr=2e-4),
            "root": pathlib.PurePosixPath("/data/re10k"),
        },
        "loops": collections.defaultdict(list, fit_loop={"epoch_progress": {"total": 3}}),
        "lr_schedulers": [{"anneal": pathlib.PurePosixPath("x").joinpath}],
        "callbacks": {"x": _Payload(marker)},
    }
    torch.save(ckpt, tmp_path / "re10k.ckpt")
    state = load_torch_file(tmp_path / "re10k.ckpt", "MVSplat checkpoint", foreign=True)
    assert not marker.exists()
    assert state["global_step"] == 300000 and list(state["state_dict"]) == list(enc)
    for k, v in enc.items():
        assert torch.equal(state["state_dict"][k], v)
    with pytest.raises(UserError, match=r"refusing to load this MVSplat checkpoint"):  # not foreign: refused
        load_torch_file(tmp_path / "re10k.ckpt", "MVSplat checkpoint")


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", r"the file is empty \(0 bytes\)"),
        (b"hello, not torch", r"not a PyTorch file"),
        ("truncated", r"the file is truncated or damaged \(\d+ bytes; its zip directory is missing\)"),
    ],
)
def test_damaged_files_are_said_in_words(tmp_path, content, message):
    f = tmp_path / "checkpoint.pt"
    if content == "truncated":
        torch.save({"w": torch.randn(1000)}, f)
        content = f.read_bytes()[:2000]
    f.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_torch_file(f, "training checkpoint")
