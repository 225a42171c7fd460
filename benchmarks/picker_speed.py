"""How long the module picker takes to show a 1B-parameter Llama built on the meta device, in a real browser.

    python benchmarks/picker_speed.py [--repeats 5] [--chromium /usr/bin/chromium] [--screenshot docs/picker.png]

Prints the median of: preparing the page data in Python (meta copy of the model, folded tree, selectability and
per-module delta counts for LoRA), the page load in headless Chromium until the tree is on screen (navigation
start -> tree rendered, read from the page), and one exact count of the live footer (attach to the meta copy,
count, detach) for the default LoRA selection. Needs Chromium and Playwright (see README: the module picker).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers

from opendelta import AutoDeltaConfig
from opendelta.cli import llama_1b_config
from opendelta.picker import PickerModel, PickerServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshot", help="also save a screenshot of the page (PNG)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    start = time.perf_counter()
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(llama_1b_config())
    build_s = time.perf_counter() - start
    n_params = sum(p.numel() for p in model.parameters())
    config = AutoDeltaConfig.from_dict({"delta_type": "lora"})

    prepare, load, count = [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium)
        for i in range(args.repeats):
            start = time.perf_counter()
            picker_model = PickerModel(model, config)
            server = PickerServer(picker_model).start()  # builds the tree JSON
            prepare.append(time.perf_counter() - start)
            try:
                start = time.perf_counter()
                picker_model.evaluate(server.tree["initial"])
                count.append(time.perf_counter() - start)
                page = browser.new_page(viewport={"width": 1000, "height": 760})
                page.goto(server.url)
                page.wait_for_selector("body[data-ready='1']")
                load.append(float(page.evaluate("document.body.dataset.renderMs")) / 1000)
                if args.screenshot and i == 0:
                    page.wait_for_selector("body[data-pending='0']")
                    page.screenshot(path=args.screenshot)
                page.close()
            finally:
                server.close()
        browser.close()
    med = statistics.median
    print(
        f"Llama 1B on the meta device: {n_params / 1e9:.2f}B parameters, {len(picker_model.names)} modules "
        f"(built by transformers in {build_s:.2f} s, not counted below)"
    )
    print(f"  page data in Python (meta copy, folded tree, selectability, counts): {med(prepare):.3f} s")
    print(f"  browser: navigation start -> tree rendered:                           {med(load):.3f} s")
    print(
        f"  one exact footer count ({len(server.tree['initial'])} modules, LoRA):                  {med(count):.3f} s"
    )
    print(f"  total until the user sees the tree:                                    {med(prepare) + med(load):.3f} s")


if __name__ == "__main__":
    main()
