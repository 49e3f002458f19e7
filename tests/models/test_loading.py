import time
from pathlib import Path

import pytest

from bird_bone.errors import ModelLoadError
from bird_bone.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from bird_bone.models.loading import EMBEDDED_MODELS, embedded_model_path, load_model


def test_local_hf_directory_loads_with_file_hashes(tmp_path, tiny_model, tiny_tokenizer):
    save_checkpoint(Checkpoint(tiny_model, tiny_tokenizer), tmp_path / "m")
    model, tokenizer, provenance = load_model(str(tmp_path / "m"))
    assert provenance.kind == "local_dir"
    assert "config.json" in provenance.files and len(provenance.files["model.safetensors"]) == 64
    assert model.config.num_hidden_layers == 2 and tokenizer("cat").input_ids == tiny_tokenizer("cat").input_ids


@pytest.mark.parametrize("spec", ["./no/such/dir", "/no/such/model.gguf", "models/a/b"])
def test_missing_path_is_named(spec):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(spec)


def test_truncated_gguf_is_rejected(tmp_path):
    source = embedded_model_path("smollm2-135m")
    truncated = tmp_path / "cut.gguf"
    with open(source, "rb") as handle:
        truncated.write_bytes(handle.read(5_000_000))
    with pytest.raises(ModelLoadError, match="cut.gguf is a truncated or corrupt GGUF"):
        load_model(str(truncated), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing half-converted left behind


def test_file_that_is_not_a_model(tmp_path):
    bogus = tmp_path / "weights.gguf"
    bogus.write_bytes(b"NOPE" + b"\0" * 100)
    with pytest.raises(ModelLoadError, match="weights.gguf is not a GGUF file"):
        load_model(str(bogus))
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    with pytest.raises(ModelLoadError, match="notes.txt is a file but not a GGUF model"):
        load_model(str(notes))


def test_unknown_hub_id_offline_fails_fast_naming_the_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # empty cache
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="'nobody-here/no-such-model'.*model.source=DIR"):
        load_model("nobody-here/no-such-model")
    assert time.monotonic() - start < 30


def test_bad_spec_and_dtype():
    with pytest.raises(ModelLoadError, match="neither an embedded name"):
        load_model("not a model id!")
    with pytest.raises(ModelLoadError, match="model.dtype"):
        load_model("smollm2-135m", dtype="int4")


def test_embedded_model_is_found_without_importing_its_package():
    path = embedded_model_path("smollm2-135m")
    assert path.name == EMBEDDED_MODELS["smollm2-135m"].filename and path.stat().st_size == 98_362_432


@pytest.mark.slow
def test_embedded_model_provenance_and_shape(smollm2):
    model, tokenizer, provenance = smollm2
    assert provenance.kind == "embedded" and "Q4_1" in provenance.description
    assert provenance.files == {"SmolLM2-135M-Instruct.Q4_1.gguf": provenance.files["SmolLM2-135M-Instruct.Q4_1.gguf"]}
    assert len(provenance.files["SmolLM2-135M-Instruct.Q4_1.gguf"]) == 64
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer("Hello world").input_ids == [19556, 905]


def _mapped_file(address: int) -> str:
    """The file behind the memory mapping that holds ``address`` ('' for anonymous memory)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return fields[5] if len(fields) > 5 else ""
    raise AssertionError(f"address {address:#x} is in no mapping")


def test_loaded_weights_live_in_process_memory_not_the_mapped_file(tmp_path, tiny_model, tiny_tokenizer):
    # transformers maps safetensors copy-on-write; writes to such weights fault page by page
    if not Path("/proc/self/maps").is_file():
        pytest.skip("needs Linux's /proc/self/maps to see where tensors live")
    save_checkpoint(Checkpoint(tiny_model, tiny_tokenizer), tmp_path / "m")
    for model in (load_model(str(tmp_path / "m")).model, load_checkpoint(tmp_path / "m").model):
        files = {name: _mapped_file(p.data_ptr()) for name, p in model.named_parameters()}
        assert not [name for name, file in files.items() if file.endswith(".safetensors")], files
        assert model.lm_head.weight is model.get_input_embeddings().weight  # tied weights stay one parameter


def test_a_gguf_of_an_unsupported_architecture_fails_before_converting(tmp_path):
    import gguf

    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(path, "gpt2")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match="GGUF architecture 'gpt2' is not supported; supported: llama .*phi3"):
        load_model(str(path), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_gemma_is_assembled_once_into_the_cache(tmp_path):
    path = embedded_model_path("gemma3-270m", tmp_path)
    assert path == tmp_path / "embedded" / EMBEDDED_MODELS["gemma3-270m"].filename
    assert path.stat().st_size == 253_113_024 and path.read_bytes()[:4] == b"GGUF"
    written = path.stat().st_mtime_ns
    assert embedded_model_path("gemma3-270m", tmp_path).stat().st_mtime_ns == written  # not assembled again
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
