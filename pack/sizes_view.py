"""How ``lmplanes config show`` prints a model's sizes (:class:`specs.ModelSizes`) for people: a block of YAML
comments under the config, so the output stays a config file that loads back unchanged."""

from __future__ import annotations

from specs.sizing import ModelSizes

_BYTE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
_COUNT_UNITS = ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K"))


def human_bytes(n: int) -> str:
    """``n`` bytes in binary units with two decimals (``1.86 GiB``); below 1 KiB, the exact count."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _BYTE_UNITS:
        value /= 1024
        if value < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{value:.2f} {unit}"
    raise AssertionError("unreachable: the last unit always returns")


def human_count(n: int) -> str:
    """A parameter count in short form (``1.00B``, ``55.32M``); below a thousand, the exact count."""
    for scale, suffix in _COUNT_UNITS:
        if n >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(n)


def sizes_comment(sizes: ModelSizes) -> str:
    """The sizes as YAML comment lines (each starting with ``#``), ending with a newline."""
    total = f"{sizes.parameters:,}"
    rows = [("parameters", f"{total} ({human_count(sizes.parameters)})")]
    rows += [(f"  {name}", f"{count:>{len(total)},}") for name, count in sizes.parts]  # aligned under the total
    if sizes.active_parameters != sizes.parameters:
        rows.append(("active", f"{sizes.active_parameters:,} ({human_count(sizes.active_parameters)}) per token"))
    dtype = sizes.dtype
    master = " + a float32 master copy" if sizes.fp32_master_copy else ""
    rows += [
        ("weights", f"{human_bytes(sizes.weight_bytes)} ({dtype})"),
        ("gradients", f"{human_bytes(sizes.gradient_bytes)} ({dtype})"),
        ("AdamW states", f"{human_bytes(sizes.optimizer_bytes)} (two float32 moments{master})"),
        ("training", f"{human_bytes(sizes.training_bytes)} (weights + gradients + AdamW; activations not included)"),
    ]
    per_token, per_row = sizes.kv_cache_bytes_per_token, sizes.kv_cache_bytes_per_row
    if per_token is None or per_row is None:
        rows.append(("KV cache", "none (an encoder keeps no cache)"))
    else:
        rows.append(
            ("KV cache", f"{human_bytes(per_token)} per token, {human_bytes(per_row)} per row of "
             f"{sizes.max_seq_len:,} tokens ({dtype})")
        )
        if sizes.recurrent_state_bytes_per_row:
            rows.append(("", f"plus {human_bytes(sizes.recurrent_state_bytes_per_row)} per row of fixed DeltaNet state "
                         "(convolution and recurrent states)"))
        if sizes.windowed_layers:
            rows.append(
                ("", f"{sizes.windowed_layers} of {sizes.n_layers} layers slide over {sizes.window} tokens; the "
                 "cache still stores every position for them")
            )
    width = max(len(label) for label, _ in rows)
    lines = ["# sizes, computed from the config (as data: --sizes):"]
    lines += [f"#   {label:<{width}}  {text}".rstrip() for label, text in rows]
    return "\n".join(lines) + "\n"
