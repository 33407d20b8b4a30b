"""What a README-only new user found in the issue-13 commands (notes/newuser17-report.md), on
moto and ``rclone serve s3``: verify's hint, repair --delete-extra's report, messages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import s3sync
from s3sync import cli


def make_dataset(root: Path, n: int = 3) -> Path:
    images, anns = [], []
    for i in range(n):
        rel = f"images/{i // 2:02d}/{i:04d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(os.urandom(20_000 + i))
        images.append({"id": i, "file_name": rel, "width": 4, "height": 3})
        anns.append({"id": 100 + i, "image_id": i, "caption": f"photo {i}"})
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root


def pulled(s3_server, bucket: str, tmp_path: Path, name: str = "ds") -> tuple[dict, str, Path]:
    net = {"endpoint_url": s3_server.endpoint_url}
    url = f"s3://{bucket}/{name}"
    s3sync.publish(make_dataset(tmp_path / "src" / name), to=url, **net)
    return net, url, s3sync.pull(url, tmp_path / "data", **net).dest


def test_verify_points_to_repair(s3_server, bucket, tmp_path, capsys) -> None:
    net, url, dest = pulled(s3_server, bucket, tmp_path)
    capsys.readouterr()
    assert cli.main(["verify", str(dest)]) == 0
    err = capsys.readouterr().err
    assert "0 B at 0 B/s" not in err and "verified OK" in err

    (dest / "cache").mkdir()
    (dest / "cache" / "f").write_text("x")
    assert cli.main(["verify", str(dest)]) == 1
    err = capsys.readouterr().err
    assert "2 extra entries are not part of generation" in err and "entries of the dataset match" in err
    assert f"hint: run 's3sync repair {dest} --delete-extra' to delete them" in err, err

    (dest / "images" / "00" / "0001.jpg").write_bytes(b"damaged")
    assert cli.main(["verify", str(dest)]) == 1
    err = capsys.readouterr().err
    assert "1 of 7 entries differ" in err, err
    assert f"hint: run 's3sync repair {dest}' to fetch again only what differs (add --delete-extra" in err, err
    assert "fresh directory" not in err

    assert cli.main(["verify", str(dest / "captions.json")]) == 1
    assert "captions.json: not a directory" in capsys.readouterr().err


def test_a_stage_that_moved_nothing_prints_no_rate_line() -> None:
    """'verify: 0 B at 0 B/s', 'download: 0 B at 0 B/s' said nothing."""
    import io

    from s3sync.ui import PlainProgress

    out = io.StringIO()
    progress = PlainProgress(out)
    progress.start("download", 0)
    progress.finish("download")
    progress.start("verify", 10)
    progress.advance("verify", 10)
    progress.finish("verify")
    assert "download" not in out.getvalue() and "verify: 10 B of 10 B" in out.getvalue()


def test_repair_delete_extra_reports_what_it_did(s3_server, bucket, tmp_path, capsys) -> None:
    """A deleted directory's contents are not reported as kept; --json's ok agrees with the exit code."""
    net, url, dest = pulled(s3_server, bucket, tmp_path)
    endpoint = ["--endpoint-url", s3_server.endpoint_url]
    (dest / "cache" / "sub").mkdir(parents=True)
    (dest / "cache" / "sub" / "f").write_text("x")
    (dest / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert cli.main(["repair", str(dest), "--json", *endpoint]) == 0  # kept extras: not an error
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and sorted(doc["kept"]) == ["cache", "cache/sub", "cache/sub/f", "notes.txt"]

    assert cli.main(["repair", str(dest), "--delete-extra", *endpoint]) == 0
    out, err = capsys.readouterr()
    assert sorted(out.splitlines()) == ["deleted\tcache", "deleted\tnotes.txt"], out
    assert "2 extra entries deleted" in err and "kept" not in err, err
    assert not (dest / "cache").exists() and s3sync.verify(dest).problems == ()

    (dest / "cache" / "f").parent.mkdir()
    (dest / "cache" / "f").write_text("x")
    assert cli.main(["repair", str(dest), "--delete-extra", "--json", *endpoint]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["deleted"] == ["cache"] and doc["kept"] == [] and doc["unrepaired"] == []


def readme_api_example() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    return section[section.index("```python\n") + len("```python\n"):section.index("\n```\n")]


def test_the_readme_api_example_runs_as_written(s3_server, bucket, tmp_path) -> None:
    """Published under a name that is not the URL's last part (as publish --to without --name
    does): the script finds it through result.dest; no torch needed outside torchrun."""
    import subprocess
    import sys

    code = readme_api_example()
    assert "s3sync.pull(SOURCE" in code and 'if __name__ == "__main__":' in code
    url = f"s3://{bucket}/coco-2014"
    s3sync.publish(make_dataset(tmp_path / "src" / "birds"), to=url, endpoint_url=s3_server.endpoint_url)
    script = tmp_path / "job" / "train.py"
    script.parent.mkdir()
    script.write_text(code.replace("s3://team-datasets/coco-2014", url))
    (tmp_path / "empty.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "S3SYNC_CONFIG")}
    env.update(PYTHONPATH=str(Path(s3sync.__file__).parents[1]), DATA_ROOT=str(tmp_path / "data"),
               S3SYNC_ENDPOINT_URL=s3_server.endpoint_url, S3SYNC_CONFIG=str(tmp_path / "empty.toml"))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
                          cwd=script.parent)
    assert done.returncode == 0, done.stderr
    assert f"3 samples in {tmp_path / 'data' / 'birds'}" in done.stdout, done.stdout


def test_dir_lists_only_names_that_resolve() -> None:
    import subprocess
    import sys

    code = ("import s3sync, s3sync.cli, s3sync.gc\n"
            "names = dir(s3sync)\n"
            "assert names == sorted(s3sync.__all__), names\n"
            "assert all(getattr(s3sync, n) is not None for n in names)\n"
            "assert not {'sys', 'Any', 'types', 'TYPE_CHECKING'} & set(names)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(s3sync.__file__).parents[1])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_publish_refuses_a_prefix_that_hides_or_nests_datasets(s3_server, bucket, tmp_path, capsys) -> None:
    """Before any upload: the bucket root above s3://b/x, and s3://b/birds/sub inside s3://b/birds."""
    from s3sync.errors import UsageError

    net = {"endpoint_url": s3_server.endpoint_url}
    src = make_dataset(tmp_path / "src" / "birds")
    s3sync.publish(src, to=f"s3://{bucket}/group/birds", **net)
    listing = sorted(o["Key"] for o in s3_keys(s3_server, bucket))
    capsys.readouterr()
    for to, said in [(f"s3://{bucket}", f"s3://{bucket} already holds datasets below it (s3://{bucket}/group/birds)"),
                     (f"s3://{bucket}/group", "already holds datasets below it"),
                     (f"s3://{bucket}/group/birds/sub", f"s3://{bucket}/group/birds is a dataset"),
                     (f"s3://{bucket}/group/birds/a/b", f"s3://{bucket}/group/birds is a dataset")]:
        assert cli.main(["publish", str(src), "--to", to, "--endpoint-url", s3_server.endpoint_url]) == 2, to
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 2 and "hint: publish to a prefix of its own" in err, err
        try:
            s3sync.publish(src, to=to, **net)
            raise AssertionError(to)
        except UsageError:
            pass
    assert sorted(o["Key"] for o in s3_keys(s3_server, bucket)) == listing  # nothing was uploaded
    # Beside it, and the same dataset again, are fine.
    s3sync.publish(src, to=f"s3://{bucket}/group/birds2", **net)
    s3sync.publish(src, to=f"s3://{bucket}/group/birds", **net)


def s3_keys(s3_server, bucket: str) -> list[dict]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    return client.list_objects_v2(Bucket=bucket).get("Contents", [])


def test_gc_summary_counts_every_generation_kept(s3_server, bucket, tmp_path, capsys) -> None:
    net = {"endpoint_url": s3_server.endpoint_url}
    url = f"s3://{bucket}/ds"
    src = make_dataset(tmp_path / "src" / "ds", n=1)
    gens = []
    for i in range(3):
        (src / "note.txt").write_text(str(i))
        gens.append(s3sync.publish(src, to=url, **net).manifest.generation)
    capsys.readouterr()
    assert cli.main(["gc", url, "--keep", "2", "--grace", "3600", "--endpoint-url", s3_server.endpoint_url]) == 0
    out, err = capsys.readouterr()
    assert out == f"kept\t{gens[0]}\tyounger than --grace (3600 s left)\n" or out.startswith(f"kept\t{gens[0]}\t"), out
    assert "deleted 0 generations" in err and "kept 3 generations" in err, err
    assert f"{gens[0]}: younger than --grace" in err

    assert cli.main(["gc", url, "--keep", "1", "--grace", "-5"]) == 2
    assert "hint: use --grace 0 or more (seconds; see 's3sync gc --help')" in capsys.readouterr().err


def test_ls_members_lists_what_a_selection_takes(s3_server, bucket, tmp_path, capsys) -> None:
    net, url, dest = pulled(s3_server, bucket, tmp_path, name="birds")
    endpoint = ["--endpoint-url", s3_server.endpoint_url]
    capsys.readouterr()
    assert cli.main(["ls", url, "--members", *endpoint]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert "20000\timages/00/0000.jpg" in lines and "-\timages/00/" in lines and "-\timages/" in lines, out
    assert any(line.endswith("\tcaptions.json") for line in lines)
    assert "birds (generation " in err and "3 files" not in err and "4 files" in err, err

    assert cli.main(["ls", url, "--members", "images/00/*", "--json", *endpoint]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["path"] for d in doc["members"]] == ["images/00/0000.jpg", "images/00/0001.jpg"]
    assert (doc["matched"], doc["files"], doc["size"]) == (2, 2, 40_001)

    assert cli.main(["ls", url, "--members", "^images/00/.*", *endpoint]) == 2
    err = capsys.readouterr().err
    assert "matches no member of birds" in err and "not regular expressions" in err, err

    # The same hints when a pull's selection matches nothing.
    for argv, said in [(["--include", ".*\\.json"], "gitignore-style globs on member paths like images/00/*.jpg, "
                                                     "not regular expressions"),
                       (["--include", "./captions.json"], "without './'"),
                       (["--include", "birds/captions.json"], "drop the leading 'birds/'"),
                       (["--exclude", "**"], "--exclude '**' leaves out every member: the selection is empty")]:
        assert cli.main(["pull", url, str(tmp_path / "part"), *argv, *endpoint]) == 2, argv
        err = capsys.readouterr().err
        assert said in err, err
        if argv[0] == "--include":
            assert "'s3sync ls SOURCE --members [GLOB...]'" in err
    assert not (tmp_path / "part" / "birds").exists()


def test_pull_names_the_dataset_and_generation(s3_server, bucket, tmp_path, capsys) -> None:
    """A fresh pull's summary names the generation (--generation G too); a directory holding
    another dataset is named as such, not as another generation; --help tells of updates."""
    net, url, dest = pulled(s3_server, bucket, tmp_path, name="birds")
    endpoint = ["--endpoint-url", s3_server.endpoint_url]
    first = s3sync.verify(dest).generation
    src = tmp_path / "src" / "birds"
    (src / "note.txt").write_text("new")
    s3sync.publish(src, to=url, **net)
    capsys.readouterr()
    assert cli.main(["pull", url, str(tmp_path / "old"), "--generation", first, *endpoint]) == 0
    err = capsys.readouterr().err
    assert f"pulled birds (generation {first}) into {tmp_path / 'old' / 'birds'}: 4 files" in err, err
    assert ") (" not in err

    other = f"s3://{bucket}/birdsc"
    s3sync.publish(make_dataset(tmp_path / "src2" / "birdsc"), to=other, **net)
    s3sync.pull(other, tmp_path / "ee", name="birds", **net)
    assert cli.main(["pull", url, str(tmp_path / "ee"), *endpoint]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'ee' / 'birds'} already exists and holds another dataset, birdsc (from {other}), " \
           "not birds" in err and "generation" not in err, err

    try:
        cli.main(["pull", "--help"])
    except SystemExit as done:
        assert done.code == 0
    text = capsys.readouterr().out
    assert "updates it in place" in text and "--generation 2" in text and "--include captions.json" in text
