"""The Demucs loader: the hub layout read as demucs reads it, and nothing a file names is run."""

import json

import pytest
import torch
from safetensors.torch import save_file

from tunesmith.errors import CheckpointError, ModelNotFound
from tunesmith.hub import DEMUCS_PATTERNS, STEM_MODELS, _patterns_for, layout_of, repo_for
from tunesmith.stems import load_stem_model
from tunesmith.stems.load import load_model_file

from .tiny import SOURCES, save_bag, tiny_htdemucs


def test_a_bag_loads_the_same_model_as_demucs_own_loader(bag_folder, stem_model):
    from demucs.hf import load_safetensors_model

    reference = load_safetensors_model(next(bag_folder.glob("*.safetensors")))  # our own file: safe to run
    ours = stem_model.bag.models[0]
    assert type(ours) is type(reference)
    assert ours.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in ours.state_dict().items())
    assert (stem_model.sources, stem_model.sample_rate, stem_model.channels) == (SOURCES, 44100, 2)
    assert float(ours.segment) == 0.5  # the Fraction came through demucs' json


def test_bag_weights_and_segment_come_from_the_yaml(tmp_path):
    weights = [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]
    folder = save_bag(tmp_path / "ft", name="htdemucs_ft", models=2, weights=weights, segment=0.25)
    model = load_stem_model(folder, device="cpu")
    assert len(model.bag.models) == 2 and model.bag.weights == weights
    assert [float(m.segment) for m in model.bag.models] == [0.25, 0.25]
    yaml_file = folder / "htdemucs_ft.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("[0.0, 1.0, 0.0, 1.0]", "[0.0, 1.0, 0.0, 0.0]"))
    with pytest.raises(CheckpointError, match="positive total weight"):  # vocals would be 0 / 0
        load_stem_model(folder, device="cpu")


def _crafted(path, klass="demucs.htdemucs.HTDemucs", args=None, structure=None):
    """A model file whose metadata names `klass` (and a `structure` with nested nodes)."""
    model = tiny_htdemucs()
    metadata = {"klass": klass, "args": json.dumps(args if args is not None else [SOURCES]), "kwargs": "{}"}
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    if structure is not None:
        metadata["structure"] = json.dumps(structure)
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_a_crafted_class_runs_nothing_and_is_refused(tmp_path):
    """klass 'os.mkdir' with the marker as argument: demucs' own loader makes the folder; ours refuses
    with one line and nothing is made."""
    from demucs.hf import load_safetensors_model

    marker = tmp_path / "ran"
    crafted = _crafted(tmp_path / "evil.safetensors", klass="os.mkdir", args=[str(marker)])
    with pytest.raises(CheckpointError) as refused:
        load_model_file(crafted)
    message = str(refused.value)
    assert "'os.mkdir'" in message and "refused" in message and "\n" not in message
    assert not marker.exists()
    with pytest.raises(Exception):  # the danger is real: demucs calls it, then fails on the result
        load_safetensors_model(crafted)
    assert marker.is_dir()


def test_a_crafted_nested_class_is_refused_before_any_import(tmp_path, monkeypatch):
    import importlib

    imported = []
    real_import = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: imported.append(name) or real_import(name, *a))
    structure = {"_dict": [["weight", {"_class": "subprocess.Popen"}]]}
    crafted = _crafted(tmp_path / "nested.safetensors", structure=structure)
    with pytest.raises(CheckpointError, match="'subprocess.Popen'.*refused"):
        load_model_file(crafted)
    kwargs_class = _crafted(tmp_path / "kwargs.safetensors", args=[SOURCES, {"_class": "os.system"}])
    with pytest.raises(CheckpointError, match="'os.system'"):
        load_model_file(kwargs_class)
    assert imported == []


def test_bags_that_are_not_demucs_are_refused_with_one_line(tmp_path, bag_folder):
    folder = tmp_path / "bad"
    folder.mkdir()
    cases = {
        "models: ['../../etc/passwd']\n": "does not list its models",
        "models: ['missing']\n": "lists missing.safetensors",
        "just text\n": "does not list its models",
        "models: [a\n": "cannot be read",
    }
    for text, expected in cases.items():
        (folder / "bag.yaml").write_text(text)
        with pytest.raises(CheckpointError) as refused:
            load_stem_model(folder, device="cpu")
        assert expected in str(refused.value) and "\n" not in str(refused.value)
    (folder / "bag.yaml").write_text("models: ['junk']\n")
    (folder / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_stem_model(folder, device="cpu")
    with pytest.raises(ModelNotFound, match="unknown stems model 'htdemux'.*htdemucs, htdemucs_ft, htdemucs_6s"):
        load_stem_model("htdemux")
    with pytest.raises(ModelNotFound, match="no such folder"):
        load_stem_model(str(tmp_path / "nowhere"))
    assert load_stem_model(next(bag_folder.glob("*.yaml")), device="cpu").sources == SOURCES  # a .yaml itself


def test_hub_names_and_layout():
    """The repositories demucs.hf downloads from, and only their yaml and safetensors files."""
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name

    for name, repo in STEM_MODELS.items():
        assert repo_for(name) == repo == f"{DEFAULT_NAMESPACE}/{hf_repo_name(name)}"
    listing = [".gitattributes", "README.md", "htdemucs_ft.yaml", "f7e0c4bc.safetensors", "f7e0c4bc.json"]
    assert _patterns_for(listing) == DEMUCS_PATTERNS


def test_a_bag_folder_is_a_demucs_layout_and_not_a_generation_model(bag_folder):
    from tunesmith import load

    assert layout_of(bag_folder) == "demucs"
    with pytest.raises(CheckpointError, match="Demucs bag.*tunesmith stems"):
        load(bag_folder)
