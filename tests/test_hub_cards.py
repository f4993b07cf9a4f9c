"""Hub cards, Hub-ready export with remote code, and ``publish``.

What is really exercised here, and what is not:

* remote code: a subprocess in which ``llava_next_video_hf`` cannot be imported (a meta-path blocker)
  loads the export with ``trust_remote_code=True`` and ``HF_HUB_OFFLINE=1``; its logits and processor
  outputs are compared with the plugin-loaded ones computed here.
* card metadata: huggingface_hub's own parsing (``ModelCard``/``ModelCard.load``, model-index ->
  ``EvalResult``) plus the documented Hub rules in ``card_problems``. The Hub's server-side
  ``/api/validate-yaml`` check needs the network and is NOT run.
* publish: ``--dry-run`` output; the no-token / bad-folder / offline-mode errors of the real CLI; and
  the real ``HfApi`` client driven by our command against a local stub server that answers the Hub
  API the way huggingface_hub 2.4's client expects (every file declared "regular"). That shows which
  requests the command makes and that every checked file's bytes reach the commit endpoint. It does
  NOT show that huggingface.co accepts them, nor the LFS/Xet path large files take: no real upload
  was made.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import EvalResult, ModelCard

from llava_next_video_hf import cli
from llava_next_video_hf.hub_cards import (
    HubFolderError,
    ModelCardError,
    RemoteCodeError,
    build_model_card,
    card_problems,
    check_folder,
    export_for_hub,
    generate_remote_code,
    reported_results,
)
from llava_next_video_hf.hub_cards.remote_code import check_imports

PYTHON = sys.executable
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "llava_next_video_hf"
FACTS = dict(
    repo_id="tester/llava-next-video-tiny",
    base_model="lmms-lab/LLaVA-NeXT-Video-7B",
    base_model_relation="finetune",
    license="llama2",
    datasets=["lmms-lab/VideoChatGPT"],
)


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("export") / "tiny-export"
    return export_for_hub(tiny_ckpt, dst, eval_results=reported_results("LLaVA-NeXT-Video-7B"), **FACTS)


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY") and k != "HF_TOKEN"}
    env.update(NO_PROXY="127.0.0.1,localhost", TOKENIZERS_PARALLELISM="false", **extra)
    return env


# ------------------------------------------------------------------------------------------- remote code

_BLOCKER = """
import sys

class _BlockPlugin:
    def find_spec(self, name, path=None, target=None):
        if name == "llava_next_video_hf" or name.startswith("llava_next_video_hf."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked for this test)")
        return None

sys.meta_path.insert(0, _BlockPlugin())
"""

_REMOTE_SCRIPT = (
    _BLOCKER
    + """
import json
import numpy as np
import PIL.Image
import torch
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

folder, inputs_path, out_path = sys.argv[1:4]
saved = torch.load(inputs_path)
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
prompt = processor.apply_chat_template(saved["messages"], add_generation_prompt=True)
image = PIL.Image.fromarray(saved["image"].numpy())
inputs = processor(text=prompt, images=[image], videos=[saved["frames"].numpy()], return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits
    hidden = base(**inputs).last_hidden_state
try:
    processor(text="<video>", videos="clip.mp4")
    video_file_error = None
except Exception as error:  # the remote code decodes no files without the plugin
    video_file_error = f"{type(error).__name__}: {error}"
classes = [type(x).__module__ for x in (model, base, processor, processor.image_processor, processor.video_processor)]
torch.save(
    {
        "prompt": prompt,
        "inputs": dict(inputs),
        "logits": logits,
        "hidden": hidden,
        "video_file_error": video_file_error,
        "classes": classes,
        "plugin_modules": [m for m in sys.modules if m.startswith("llava_next_video_hf")],
    },
    out_path,
)
"""
)


def test_export_loads_with_remote_code_where_the_plugin_cannot_be_imported(exported, tmp_path):
    from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

    rng = np.random.RandomState(0)
    frames = torch.from_numpy(rng.randint(0, 256, (4, 200, 260, 3), dtype=np.uint8))  # (T, H, W, 3)
    image = torch.from_numpy(rng.randint(0, 256, (300, 200, 3), dtype=np.uint8))
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "What happens?"}],
        }
    ]
    torch.save({"frames": frames, "image": image, "messages": messages}, tmp_path / "inputs.pt")

    # the plugin-loaded reference (the plugin is imported here: no trust_remote_code needed)
    import PIL.Image

    model = AutoModelForImageTextToText.from_pretrained(exported).eval()
    base = AutoModel.from_pretrained(exported).eval()
    processor = AutoProcessor.from_pretrained(exported)
    assert type(model).__module__ == "llava_next_video_hf.modeling"
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(
        text=prompt, images=[PIL.Image.fromarray(image.numpy())], videos=[frames.numpy()], return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**inputs).logits
        hidden = base(**inputs).last_hidden_state

    script = tmp_path / "remote_load.py"
    script.write_text(_REMOTE_SCRIPT)
    env = _clean_env(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    run = subprocess.run(
        [PYTHON, str(script), str(exported), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt", weights_only=False)

    assert remote["plugin_modules"] == []
    assert all(m.startswith("transformers_modules.") for m in remote["classes"]), remote["classes"]
    assert remote["prompt"] == prompt
    assert set(remote["inputs"]) == set(inputs)
    for key in ("input_ids", "attention_mask", "image_sizes", "video_num_frames"):
        assert torch.equal(remote["inputs"][key], inputs[key]), key
    for key in ("pixel_values", "pixel_values_videos"):
        assert torch.equal(remote["inputs"][key], inputs[key]), key
    assert int((inputs["input_ids"] == processor.video_token_id).sum()) == 4 * 144
    assert remote["logits"].shape == logits.shape
    assert (remote["logits"] - logits).abs().max().item() <= 1e-5
    assert (remote["hidden"] - hidden).abs().max().item() <= 1e-5
    assert remote["video_file_error"].startswith("VideoLoadError: cannot decode a video given as str")
    assert "pip install llava-next-video-hf" in remote["video_file_error"]


CORE = {
    "configuration.py", "errors.py", "frame_sampling.py", "image_processing.py", "layout.py", "limits.py",
    "modeling.py", "processing.py", "rope.py", "tokenization.py", "video_inputs.py", "video_processing.py",
    "visual_tokens.py",
}  # fmt: skip


def test_remote_code_is_the_model_core_copied_unchanged(exported):
    """transformers' custom_object_save ships the package's own core files, byte for byte."""
    shipped = {p.name: p.read_text() for p in exported.glob("*.py")}
    assert set(shipped) == CORE  # the classes' modules and every sibling they import, nothing else
    for name, text in shipped.items():
        assert text == (PACKAGE_DIR / name).read_text(), name
    assert generate_remote_code() == shipped


def test_remote_code_imports_only_allowed_packages(exported):
    from transformers.dynamic_module_utils import get_imports, get_relative_import_files

    allowed = {"torch", "transformers", "huggingface_hub", "numpy", "PIL"} | set(sys.stdlib_module_names)
    for path in exported.glob("*.py"):
        imported = set(get_imports(path))  # transformers' own scan, the one trust_remote_code runs
        assert imported <= allowed, (path.name, imported - allowed)
        assert not imported & {"av", "urllib", "subprocess", "socket", "http", "llava_next_video_hf"}
        for needed in get_relative_import_files(path):  # every sibling it needs is shipped
            assert Path(needed).is_file(), (path.name, needed)
    config = json.loads((exported / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration.LlavaNextVideoAnyResConfig",
        "AutoModel": "modeling.LlavaNextVideoAnyResModel",
        "AutoModelForImageTextToText": "modeling.LlavaNextVideoAnyResForConditionalGeneration",
    }
    processor = json.loads((exported / "processor_config.json").read_text())
    assert processor["auto_map"] == {"AutoProcessor": "processing.LlavaNextVideoAnyResProcessor"}
    assert processor["image_processor"]["auto_map"] == {
        "AutoImageProcessor": "image_processing.LlavaNextVideoAnyResImageProcessor"
    }
    assert processor["video_processor"]["auto_map"] == {
        "AutoVideoProcessor": "video_processing.LlavaNextVideoAnyResVideoProcessor"
    }


def test_remote_code_check_refuses_packages_the_export_may_not_import():
    check_imports(
        "import torch\nfrom .rope import rope_factor\ntry:\n    import av\nexcept ImportError:\n    pass\n",
        "ok.py",
    )
    for bad in ("import av\n", "from urllib import request\n", "import llava_next_video_hf.video_io\n"):
        with pytest.raises(RemoteCodeError, match="would import"):
            check_imports(bad, "bad.py")


# ------------------------------------------------------------------------------------------- model card


def test_card_metadata_is_valid_and_round_trips(exported):
    text = (exported / "README.md").read_text()
    assert card_problems(text) == []
    card = ModelCard.load(exported / "README.md")  # huggingface_hub's parsing, model-index included
    data = card.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "video-text-to-text"
    assert data.base_model == "lmms-lab/LLaVA-NeXT-Video-7B"
    assert data["base_model_relation"] == "finetune"
    assert data.license == "llama2"
    assert data.datasets == ["lmms-lab/VideoChatGPT"]
    assert {"llava-next-video", "vllm", "custom_code"} <= set(data.tags)
    assert data.model_name == "llava-next-video-tiny"
    got = {(r.dataset_name, r.metric_name): r.metric_value for r in data.eval_results}
    # figures of shared/reference/paper_results.md, LLaVA-NeXT-Video 7B row
    assert got[("NExT-QA", "WUPS@All")] == 26.90
    assert got[("ActivityNet-QA", "Accuracy")] == 53.5
    assert got[("ActivityNet-QA", "Score")] == 3.2
    assert got[("Video Detailed Description", "Score")] == 3.32
    assert [
        got[("VideoChatGPT", m)] for m in ("Correctness", "Detail", "Context", "Temporal", "Consistency")
    ] == [
        3.39,
        3.29,
        3.92,
        2.60,
        3.12,
    ]
    assert all(r.source_url and "reported" in r.source_name for r in data.eval_results)
    assert "model-index:" in text
    # save -> load gives the same card
    again = ModelCard(str(card))
    assert str(again) == str(card)
    assert again.data.eval_results == data.eval_results


def test_card_body_is_generated_from_the_config(tmp_path):
    from llava_next_video_hf import testing

    folder = tmp_path / "ckpt"
    # 40 frames x 144 tokens + 1000 text tokens need ceil(6760 / 4096) = 2x the 4096 trained positions
    testing.tiny_config(max_frames=40, rope_scaling_factor="auto").save_pretrained(folder)
    card = build_model_card(folder, repo_id="me/long", license="apache-2.0", remote_code=False)
    body = card.text
    assert "linear factor **2**" in body
    assert "4096 trained positions x 2 = **8192** positions" in body
    assert "12x12 = 144 tokens" in body
    assert "the default 8-frame clip 1152" in body
    assert "`auto`: derived from 40 frames" in body
    assert 'from_pretrained("me/long"' in body
    assert "vllm serve me/long --max-model-len 8192" in body
    assert "This export ships no remote code" in body
    assert 'from_pretrained("me/long", trust_remote_code=True)' not in body
    assert "@misc{zhang2024llavanextvideo" in body
    assert "## Evaluation" not in body  # no results given
    assert "model-index" not in str(card)


def test_card_problems_catch_bad_metadata(exported):
    good = (exported / "README.md").read_text()
    assert card_problems(good.replace("base_model_relation: finetune", "base_model_relation: distilled"))
    with pytest.warns(UserWarning, match="not in the Hub's documented list"):
        assert card_problems(good.replace("license: llama2", "license: Llama 2 Community"))
    assert card_problems(good.replace("pipeline_tag: video-text-to-text", "pipeline_tag: text-generation"))
    assert card_problems(good.replace("- vllm\n", ""))
    assert card_problems(
        good.replace("base_model: lmms-lab/LLaVA-NeXT-Video-7B", "base_model: not a/valid//id")
    )
    broken = good.replace("      name: NExT-QA\n", "", 1)  # a model-index dataset without its name
    problems = card_problems(broken)
    assert problems and "huggingface_hub cannot parse" in problems[0]
    with pytest.raises(ModelCardError, match="base_model_relation"):
        build_model_card(exported, base_model="a/b", base_model_relation="distilled")
    with pytest.raises(ModelCardError, match="needs base_model"):
        build_model_card(exported, base_model_relation="finetune")
    with pytest.raises(ModelCardError, match="license_name"):
        build_model_card(exported, license="other")
    with pytest.raises(ModelCardError, match="EvalResult"):
        build_model_card(exported, eval_results=[{"dataset_name": "x"}])
    card = build_model_card(
        exported, eval_results=[EvalResult("video-text-to-text", "a/b", "AB", "accuracy", 0.5)]
    )
    assert card.data.eval_results[0].metric_value == 0.5


def test_card_usage_snippet_runs_with_the_plugin(exported, tmp_path):
    from llava_next_video_hf import testing

    clip = testing.make_video(tmp_path / "clip.mp4", num_frames=24, width=160, height=120)
    code = re.findall(r"```python\n(.*?)```", (exported / "README.md").read_text(), flags=re.DOTALL)[0]
    assert "import llava_next_video_hf" in code
    code = code.replace(f'"{FACTS["repo_id"]}"', repr(str(exported))).replace('"clip.mp4"', repr(str(clip)))
    namespace: dict = {}
    exec(code.replace("max_new_tokens=128", "max_new_tokens=3"), namespace)
    assert namespace["inputs"]["video_num_frames"].tolist() == [8]  # the checkpoint's default frames
    assert namespace["out"].shape[1] > namespace["inputs"]["input_ids"].shape[1]


# ------------------------------------------------------------------------------------------- export


def test_export_without_remote_code_via_cli(tiny_ckpt, tmp_path, capsys):
    dst = tmp_path / "plain"
    rc = cli.main(["export", str(tiny_ckpt), str(dst), "--no-remote-code", "--license", "apache-2.0"])
    assert rc == 0
    assert not list(dst.glob("*.py"))
    for name in ("config.json", "processor_config.json", "tokenizer_config.json"):
        assert "auto_map" not in (dst / name).read_text(), name
    data = ModelCard.load(dst / "README.md").data
    assert "custom_code" not in data.tags and data.license == "apache-2.0"
    assert (dst / "model.safetensors").read_bytes() == (tiny_ckpt / "model.safetensors").read_bytes()
    assert sorted(p.name for p in dst.iterdir()) == sorted(
        [p.name for p in tiny_ckpt.iterdir()] + ["README.md"]
    )
    # a second export refuses to overwrite, and leaves the first untouched
    before = _snapshot(dst)
    assert cli.main(["export", str(tiny_ckpt), str(dst)]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert _snapshot(dst) == before
    assert [p.name for p in tmp_path.iterdir()] == ["plain"]  # no temporary folder left behind


def test_export_carries_every_shard(tiny_ckpt, tmp_path):
    from transformers import AutoModelForImageTextToText

    sharded = tmp_path / "sharded"
    shutil.copytree(tiny_ckpt, sharded)
    (sharded / "model.safetensors").unlink()
    AutoModelForImageTextToText.from_pretrained(tiny_ckpt).save_pretrained(sharded, max_shard_size="300KB")
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) > 1
    dst = export_for_hub(sharded, tmp_path / "out", license="mit")
    for name in [*shards, "model.safetensors.index.json"]:
        assert (dst / name).read_bytes() == (sharded / name).read_bytes(), name
    assert set(shards) <= {f.path_in_repo for f in check_folder(dst)}


def test_export_never_carries_code_or_pickles_from_the_source(tiny_ckpt, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(tiny_ckpt, src)
    (src / "modeling_evil.py").write_text("import os\nos.system('echo pwned')\n")
    (src / "training_args.bin").write_bytes(b"pickle")
    (src / "notes").mkdir()
    (src / "notes" / "log.txt").write_text("x")
    assert cli.main(["export", str(src), str(tmp_path / "out"), "--license", "mit"]) == 0
    out = capsys.readouterr().out
    assert (
        "left out (not part of a Hub checkpoint): modeling_evil.py, notes/log.txt, training_args.bin" in out
    )
    shipped = {p.name for p in (tmp_path / "out").rglob("*")}
    assert not shipped & {"modeling_evil.py", "training_args.bin", "notes", "log.txt"}


def test_export_refuses_other_formats_and_leaves_nothing(tmp_path):
    src = tmp_path / "llava_hf"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "llava_next_video"}))
    with pytest.raises(HubFolderError, match="convert it first"):
        export_for_hub(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_check_folder_lists_every_problem(exported, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    # shard the weights by hand: an index naming a shard that is missing
    (bad / "model.safetensors").rename(bad / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    (bad / "tokenizer.json").unlink()
    (bad / "helper.py").write_text("import os\n")
    (bad / "pytorch_model.bin").write_bytes(b"pickle")
    (bad / "modeling.py").unlink()
    with pytest.raises(HubFolderError) as info:
        check_folder(bad)
    message = str(info.value)
    for expected in (
        "shard(s) missing: model-00002-of-00002.safetensors",
        "no tokenizer model",
        "unexpected code file(s) helper.py",
        "pickle file(s) pytorch_model.bin",
        "needs modeling.py, which is missing",
    ):
        assert expected in message
    # a truncated shard is caught from its header alone
    index["weight_map"] = {"a": "model-00001-of-00002.safetensors"}
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    shard = bad / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(HubFolderError, match="truncated"):
        check_folder(bad)


# ------------------------------------------------------------------------------------------- publish


def test_publish_dry_run_lists_every_file_and_needs_no_token(exported, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no stored login either
    rc = cli.main(["publish", str(exported), "tester/tiny", "--dry-run", "--revision", "v1", "--private"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "target: tester/tiny@v1 (model repo, private)" in out
    files = sorted(p for p in exported.iterdir() if p.is_file())
    for path in files:
        line = next(x for x in out.splitlines() if x.split() and x.split()[0] == path.name)
        assert line.split()[1] == f"{path.stat().st_size:,d}", line
    assert f"{len(files)} files, {sum(p.stat().st_size for p in files):,d} B" in out
    assert "dry run: nothing was uploaded" in out


def test_publish_errors_before_any_network(exported, tiny_ckpt, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert cli.main(["publish", str(exported), "tester/tiny"]) == 1
    assert "no Hugging Face token" in capsys.readouterr().err
    assert cli.main(["publish", str(exported), "not a repo id", "--dry-run"]) == 1
    assert "invalid repo id" in capsys.readouterr().err
    assert cli.main(["publish", str(tiny_ckpt), "tester/tiny", "--token", "hf_x"]) == 1  # not exported
    assert "README.md (the model card) is missing" in capsys.readouterr().err
    assert cli.main(["publish", str(tmp_path / "nowhere"), "tester/tiny", "--dry-run"]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_publish_in_offline_mode_fails_cleanly_and_writes_nothing(exported, tmp_path):
    before, neighbours = _snapshot(exported), sorted(os.listdir(exported.parent))
    token = "hf_offlineTestToken0123456789"
    run = subprocess.run(
        [PYTHON, "-m", "llava_next_video_hf.cli", "publish", str(exported), "tester/tiny", "--token", token],
        env=_clean_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stderr[-2000:]
    assert "error: create_repo: the Hub client is in offline mode" in run.stderr
    assert token not in run.stdout + run.stderr
    assert _snapshot(exported) == before and sorted(os.listdir(exported.parent)) == neighbours


class _HubStub(BaseHTTPRequestHandler):
    """The few Hub endpoints ``create_repo`` + ``create_branch`` + ``upload_folder`` call, as
    huggingface_hub 2.4's client reads them; every file is declared a "regular" (inline) upload."""

    calls: list[dict] = []

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _reply(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        call = {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        self.calls.append(call)
        endpoint = f"http://{self.headers['Host']}"
        if self.path == "/api/repos/create":
            data = json.loads(body)
            return self._reply(200, {"url": f"{endpoint}/{data['organization']}/{data['name']}"})
        if self.path == "/api/validate-yaml":
            return self._reply(200, {"errors": [], "warnings": []})
        if "/branch/" in self.path:
            return self._reply(200, {})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._reply(
                200,
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                },
            )
        if "/commit/" in self.path:
            repo = self.path.split("/api/models/")[1].split("/commit/")[0]
            oid = "0123456789abcdef0123456789abcdef01234567"
            return self._reply(200, {"commitUrl": f"{endpoint}/{repo}/commit/{oid}", "commitOid": oid})
        return self._reply(404, {"error": f"stub does not know {self.path}"})

    def do_GET(self) -> None:  # noqa: N802
        self.calls.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": b""})
        self._reply(404, {"error": f"stub does not know GET {self.path}"})


def test_publish_drives_the_hub_client_against_a_local_stub(exported, tmp_path):
    """Our command + the real huggingface_hub client, pointed (HF_ENDPOINT) at a stub on 127.0.0.1.

    Proves: validation happens first, the requests are create_repo (private) -> create_branch ->
    validate-yaml -> preupload -> one commit to the branch, the token travels only as the bearer
    header, and every checked file arrives byte for byte. Does not prove that huggingface.co accepts
    the upload (the stub's answers are our reading of the client), nor the LFS/Xet path of large files.
    """
    _HubStub.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubStub)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    token = "hf_stubTestToken0123456789"
    try:
        run = subprocess.run(
            [PYTHON, "-m", "llava_next_video_hf.cli", "publish", str(exported), "tester/tiny"]
            + ["--private", "--revision", "dev", "--commit-message", "first upload"],
            env=_clean_env(
                HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
                HF_HUB_OFFLINE="0",
                HF_HOME=str(tmp_path / "hf_home"),
                HF_TOKEN=token,
                HF_HUB_DISABLE_TELEMETRY="1",
            ),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert run.returncode == 0, run.stderr[-3000:]
    assert token not in run.stdout + run.stderr
    calls = _HubStub.calls
    paths = [c["path"].split("?")[0] for c in calls]
    assert paths == [
        "/api/repos/create",
        "/api/models/tester/tiny/branch/dev",
        "/api/validate-yaml",
        "/api/models/tester/tiny/preupload/dev",
        "/api/models/tester/tiny/commit/dev",
    ]
    assert all(c["auth"] == f"Bearer {token}" for c in calls)
    create = json.loads(calls[0]["body"])
    assert (
        create["name"] == "tiny" and create["organization"] == "tester" and create["visibility"] == "private"
    )
    assert json.loads(calls[2]["body"])["content"] == (exported / "README.md").read_text()
    lines = [json.loads(x) for x in calls[4]["body"].splitlines()]
    assert lines[0] == {"key": "header", "value": {"summary": "first upload", "description": ""}}
    sent = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines[1:]}
    local = {p.name: p.read_bytes() for p in exported.iterdir() if p.is_file()}
    assert sent == local
    assert "uploaded to" in run.stdout and "0123456789abcdef" in run.stdout
