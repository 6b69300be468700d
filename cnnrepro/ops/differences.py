"""Where the ops deliberately differ from PyTorch's native ops, and why: mostly inputs native accepts
that we refuse, and one result.

Everything else native accepts, ours accepts with native's result; everything native rejects, ours
rejects with a message naming the argument. The conformance tests (tests/test_conformance.py) read
this table: an invalid input that native accepts fails them unless its kind is listed here.
"""

DIFFERENCES = {
    "max_pool2d": {
        "integer_dtype": "integer inputs are refused: the kernels are for the floating types networks "
        "pool (native max_pool2d also pools int64 on the CPU).",
    },
    "lrn": {
        "integer_dtype": "integer inputs are refused: LRN divides, so native's integer result is a "
        "truncation nobody wants.",
        "alpha_negative_or_non_finite": "alpha must be finite and >= 0: a negative or non-finite alpha "
        "makes the denominator negative or NaN, a silent NaN source in native.",
        "beta_non_finite": "beta must be finite, for the same reason.",
        "k_negative_or_non_finite": "k must be finite and >= 0, for the same reason.",
        "gradient_beside_an_inf": "(a result, not a refusal) the gradient of a finite input whose window "
        "holds an inf is 0 here (its output is x / inf = 0 whatever x is) and NaN in native (inf / inf in "
        "its autograd formula).",
    },
    "conv_bn_relu": {
        "per_channel_rank": "bn_weight, bn_bias, running_mean and running_var must be 1-D with one value "
        "per output channel, as nn.BatchNorm2d makes them; native's functional batch_norm also reads any "
        "tensor of that many elements, whatever its shape.",
        "weight_device": "a weight on another device than the input is refused, meta included: native's "
        "conv2d takes a meta weight beside a CPU input and returns a meta result, which nothing can "
        "read.",
        "eps_non_positive_in_eval": "eps must be > 0 in eval mode too (native checks it only in "
        "training): with eps = 0 a zero running variance divides by zero.",
    },
}
