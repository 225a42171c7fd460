"""Runs every usage file's run() in a fresh temp dir and writes legacy_results.json (stem -> status/observations).

    HF_HUB_OFFLINE=1 /work/legacy_env/bin/python /work/scratch/real_usages/record.py [out.json] [stem ...]
"""
import contextlib
import importlib.util
import io
import json
import logging
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def usage_files():
    return sorted(p for p in HERE.glob("*__*.py"))


def run_one(path):
    spec = importlib.util.spec_from_file_location(f"usage_{path.stem}", path)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            os.chdir(tmp)
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                obs = module.run(tmp)
            json.dumps(obs)
            return {"status": "ok", "observations": obs}
        except BaseException as e:  # noqa: BLE001 - recorded
            if isinstance(e, KeyboardInterrupt):
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return {"status": "error", "error": f"{type(e).__name__}: {msg}",
                    "where": traceback.extract_tb(e.__traceback__)[-1].filename.split("site-packages/")[-1]}
        finally:
            os.chdir(cwd)


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].endswith(".json") else HERE / "legacy_results.json"
    only = [a for a in sys.argv[1:] if not a.endswith(".json")]
    logging.disable(logging.WARNING)
    results = {}
    for path in usage_files():
        if only and path.stem not in only:
            continue
        results[path.stem] = run_one(path)
        r = results[path.stem]
        print(f"{path.stem:55s} {r['status']} {r.get('error', '')}", file=sys.__stdout__, flush=True)
    if not only:
        out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    else:
        print(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
