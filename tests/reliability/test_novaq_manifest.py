"""The NOVAQ reader never crashes on a malformed manifest and never trusts an edited one (issue 17,
items 4, 5 and 9): a seeded fuzz of a few hundred mutations through ``validate``, ``info`` and
``stats``, the manifest's seal, sizes checked before anything is allocated, and unlisted files."""

from __future__ import annotations

import copy
import json
import random
import time

import pytest

from bird_bone.cli.novaq import main
from bird_bone.export.novaq_format import MANIFEST, NovaqFormatError, write_novaq
from bird_bone.export.novaq_read import read_novaq, validate_novaq
from bird_bone.export.novaq_schema import seal
from bird_bone.quant.novaq import NovaqConfig, quantize_model
from tests.conftest import make_tiny_llama

MUTATIONS = 500
BAD_VALUES = [None, True, -1, 0, 1.5, -1e300, 1e12, 2**63, 10**30, float("nan"), "", "x" * 300, "../../etc/passwd",
              "/etc/passwd", [], [1, -2], {}, {"a": 1}, [[0]], "float64"]  # fmt: skip


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A tiny NOVAQ directory without tokenizer (validate needs no tokenizer load) and its manifest."""
    model = make_tiny_llama(64, layers=1)
    config = NovaqConfig(codebook_size=4, residual_codebook_size=2, kmeans_iterations=2)
    path = tmp_path_factory.mktemp("novaq") / "tiny.novaq"
    manifest = write_novaq(path, model, None, quantize_model(model, config, progress=False), config.to_dict())
    return path, manifest


def nodes(tree, path=()):
    """Every (path, value) of a JSON tree."""
    yield path, tree
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        yield from nodes(value, (*path, key))


def mutate(manifest: dict, rng: random.Random) -> dict:
    """One random edit: delete a key, or put a wrong type, a negative or huge number, a wrong string,
    a list for a dict (or a dict for a list) somewhere in the tree."""
    m = copy.deepcopy(manifest)
    paths = [p for p, _ in nodes(m) if p and "statistics" not in p[:1] and "extra" not in p[:1]]
    path = rng.choice(paths)
    parent = m
    for key in path[:-1]:
        parent = parent[key]
    old = parent[path[-1]]
    if isinstance(parent, dict) and rng.random() < 0.25:
        del parent[path[-1]]
    elif isinstance(old, dict):
        parent[path[-1]] = rng.choice([[], list(old.values())[:1], None, "x"])
    elif isinstance(old, list):
        parent[path[-1]] = rng.choice([{}, {"0": old[:1]}, old[:-1], old + old[:1], None, 3])
    elif isinstance(old, bool):
        parent[path[-1]] = rng.choice([not old, 1, "true", None])
    elif isinstance(old, int | float):
        parent[path[-1]] = rng.choice([-old - 1, old * 1000 + 7, 10**12, 2**63, 0, -1, 1.5, str(old)])
    else:
        parent[path[-1]] = rng.choice(BAD_VALUES)
    return m


def write(path, manifest: dict, reseal: bool) -> None:
    (path / MANIFEST).write_text(json.dumps(seal(manifest) if reseal else manifest))


def run_cli(argv, capsys) -> str:
    """Exit status 0, or 1 with one line naming the problem; anything else is a crash."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code in (0, 1), argv
    if code:
        assert err.startswith("novaq: error: ") and "\n" not in err and "Traceback" not in err
    return "error" if code else "ok"


@pytest.mark.timeout(240)
def test_fuzzed_manifests_give_a_clean_error_or_a_success(pristine, capsys):
    path, manifest = pristine
    rng, start = random.Random(17), time.perf_counter()
    outcomes = {f"{c} {r}": 0 for c in ("validate", "info", "stats") for r in ("ok", "error")}
    for i in range(MUTATIONS):
        write(path, mutate(manifest, rng), reseal=i % 10 != 0)  # one in ten also breaks the seal
        try:
            validate_novaq(path)
            outcomes["validate ok"] += 1
        except NovaqFormatError as exc:
            assert "\n" not in str(exc).strip()
            outcomes["validate error"] += 1
        for command in ("info", "stats"):
            outcomes[f"{command} {run_cli([command, str(path)], capsys)}"] += 1
    write(path, manifest, reseal=False)
    seconds = time.perf_counter() - start
    print(f"fuzz: {MUTATIONS} manifests x 3 commands, {outcomes}, {seconds:.1f} s")
    assert outcomes["validate error"] > 0.8 * MUTATIONS  # most mutations are caught, none crashed
    assert outcomes["info error"] == outcomes["stats error"] > MUTATIONS / 2  # the same schema
    assert seconds < 180


def edited(path, manifest, change, reseal):
    m = copy.deepcopy(manifest)
    change(m)
    write(path, m, reseal)


def test_raising_the_recorded_tolerance_does_not_pass_changed_logits(pristine):
    path, manifest = pristine

    def tamper(m):
        m["verification"]["atol"] = 100.0
        m["verification"]["prompts"][0]["top_logits"][0][0] += 1.5

    edited(path, manifest, tamper, reseal=True)  # even a re-sealed manifest: the tolerance is the reader's
    with pytest.raises(NovaqFormatError, match=r"differ from the recorded ones by 1\.5"):
        validate_novaq(path)
    edited(path, manifest, tamper, reseal=False)
    with pytest.raises(NovaqFormatError, match="manifest_sha256 mismatch"):
        validate_novaq(path)
    write(path, manifest, reseal=False)


def test_an_edited_config_fails_validate(pristine, capsys):
    path, manifest = pristine

    def tamper(m):  # the case: the model config edited and the tolerance raised to hide it
        m["model"]["config"]["rms_norm_eps"] = 0.5
        m["verification"]["atol"] = 100.0

    edited(path, manifest, tamper, reseal=False)
    assert main(["validate", str(path)]) == 1
    assert "manifest_sha256 mismatch" in capsys.readouterr().err
    write(path, manifest, reseal=False)
    assert main(["validate", str(path)]) == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("key", ["vocab_size", "hidden_size", "intermediate_size"])
def test_huge_sizes_are_refused_before_anything_is_allocated(pristine, key):
    path, manifest = pristine
    edited(path, manifest, lambda m: m["model"]["config"].__setitem__(key, 10**12), reseal=True)
    with pytest.raises(NovaqFormatError, match="does not fit the tensors"):
        read_novaq(path)
    write(path, manifest, reseal=False)


def test_an_entry_that_disagrees_with_its_shard_is_refused(pristine):
    path, manifest = pristine
    name = "model.layers.0.mlp.down_proj.weight"

    def grow(m):
        entry = m["tensors"][name]
        entry["normalization"]["outliers"] = 0
        entry["normalization"]["all_rows"] = False

    edited(path, manifest, grow, reseal=True)
    with pytest.raises(NovaqFormatError, match=f"tensor {name}: shard entry {name}.outliers has shape"):
        read_novaq(path)
    write(path, manifest, reseal=False)


def test_a_file_the_manifest_does_not_list_is_refused(tmp_path, tiny_tokenizer):
    model = make_tiny_llama(len(tiny_tokenizer), layers=1)
    config = NovaqConfig(codebook_size=4, residual_codebook_size=2, kmeans_iterations=2)
    path = tmp_path / "t.novaq"
    write_novaq(path, model, tiny_tokenizer, quantize_model(model, config, progress=False), config.to_dict())
    (path / "tokenizer" / "added_tokens.json").write_text('{"<evil>": 5}')
    with pytest.raises(NovaqFormatError, match="added_tokens.json: file not listed in the manifest"):
        read_novaq(path)
