"""Converts dlib's 128-d ResNet face descriptor (dlib_face_recognition_resnet_model_v1.dat) to a deterministic ONNX file.

The .dat is parsed with our own reader of dlib's serialization format, driven by the network's type (as dlib's
own deserializer is): the file stores no layer graph, only each layer's parameters, so the architecture below
mirrors dlib's `dnn_face_recognition_ex` network definition and every structural value the file does store
(filter counts, kernel sizes, strides, paddings, pool windows) is checked against it.

ONNX contract: input `input` [batch, 3, 150, 150] float32, RGB planes already normalised as (x - mean) / 256
with the mean printed by this script (the file's input layer); output `embedding` [batch, 128], raw (dlib
compares raw descriptors by Euclidean distance, threshold 0.6). Affine layers are folded into the convolutions.

    python scripts/convert_dlib.py --dat dlib_face_recognition_resnet_model_v1.dat --out dlib-resnet-v1.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version that introduced opset 17; pinned so the bytes do not follow the onnx package
PRODUCER_NAME = "facematch-convert_dlib"
PRODUCER_VERSION = "1"
EXPECTED_PARAMETERS = 5_614_592

# dlib's special float exponents for non-finite values.
FLOAT_EXPONENT_INF = 32000
FLOAT_EXPONENT_NEG_INF = 32001
FLOAT_EXPONENT_NAN = 32002


class DlibFormatError(Exception):
    """The file does not hold the network this converter knows, byte for byte."""


# --------------------------------------------------------------------------------------------------------------
# dlib's primitive serialization


class DlibReader:
    """Reads dlib's primitives from an in-memory file, failing loudly on anything unexpected."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, message: str) -> DlibFormatError:
        return DlibFormatError(f"offset {self.pos}: {message}")

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise self.fail(f"wanted {count} bytes, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def read_int(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if not 1 <= size <= 8 or control & 0x70:
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        magnitude = int.from_bytes(self.take(size), "little")
        return -magnitude if control & 0x80 else magnitude

    def read_float(self) -> float:
        mantissa = self.read_int()
        exponent = self.read_int()
        if exponent == FLOAT_EXPONENT_INF:
            return math.inf
        if exponent == FLOAT_EXPONENT_NEG_INF:
            return -math.inf
        if exponent == FLOAT_EXPONENT_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def read_bool(self) -> bool:
        flag = self.take(1)
        if flag not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {flag!r}")
        return flag == b"1"

    def read_string(self) -> str:
        length = self.read_int()
        return self.take(length).decode("ascii", errors="strict")

    def expect_string(self, expected: str) -> None:
        start = self.pos
        found = self.read_string()
        if found != expected:
            self.pos = start
            raise self.fail(f"expected {expected!r}, found {found!r}")

    def expect_int(self, expected: int, what: str) -> None:
        found = self.read_int()
        if found != expected:
            raise self.fail(f"{what}: expected {expected}, found {found}")

    def read_tensor(self) -> np.ndarray:
        self.expect_int(2, "tensor version")
        dims = tuple(self.read_int() for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.fail(f"negative tensor dimensions {dims}")
        count = math.prod(dims)
        values = np.frombuffer(self.take(4 * count), dtype="<f4")
        return values.reshape(dims).astype(np.float32)

    def read_alias(self) -> tuple[int, int, int, int]:
        self.expect_int(1, "alias_tensor version")
        return tuple(self.read_int() for _ in range(4))


# --------------------------------------------------------------------------------------------------------------
# The network, as a chain of dlib layer objects from the loss (outermost) to the input (innermost)


@dataclass
class Layer:
    """One element of dlib's layer chain; `spec` holds the template arguments, `found` what the file holds."""

    kind: str
    spec: dict = field(default_factory=dict)
    found: dict = field(default_factory=dict)


def block_layers(filters: int, stride: int) -> list[Layer]:
    # dlib: BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>
    return [
        Layer("affine"),
        Layer("con", {"filters": filters, "kernel": 3, "stride": 1}),
        Layer("relu"),
        Layer("affine"),
        Layer("con", {"filters": filters, "kernel": 3, "stride": stride}),
    ]


def residual_layers(filters: int) -> list[Layer]:
    # dlib: relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
    return [Layer("relu"), Layer("add_prev", {"tag": 1})] + block_layers(filters, 1) + [Layer("tag", {"tag": 1})]


def residual_down_layers(filters: int) -> list[Layer]:
    # dlib: relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return (
        [
            Layer("relu"),
            Layer("add_prev", {"tag": 2}),
            Layer("avg_pool", {"window": 2, "stride": 2}),
            Layer("skip", {"tag": 1}),
            Layer("tag", {"tag": 2}),
        ]
        + block_layers(filters, 2)
        + [Layer("tag", {"tag": 1})]
    )


def describe_network() -> list[Layer]:
    """The layer chain of dlib's face recognition ResNet, outermost first."""
    level0 = residual_down_layers(256)
    level1 = residual_layers(256) + residual_layers(256) + residual_down_layers(256)
    level2 = residual_layers(128) + residual_layers(128) + residual_down_layers(128)
    level3 = residual_layers(64) + residual_layers(64) + residual_layers(64) + residual_down_layers(64)
    level4 = residual_layers(32) + residual_layers(32) + residual_layers(32)
    return (
        [
            Layer("loss_metric"),
            Layer("fc", {"outputs": 128}),
            Layer("avg_pool", {"window": 0, "stride": 1}),  # avg_pool_everything
        ]
        + level0 + level1 + level2 + level3 + level4
        + [
            Layer("max_pool", {"window": 3, "stride": 2}),
            Layer("relu"),
            Layer("affine"),
            Layer("con", {"filters": 32, "kernel": 7, "stride": 2}),
            Layer("input", {"size": 150}),
        ]
    )


def default_padding(window: int, stride: int) -> int:
    # dlib's con_/max_pool_/avg_pool_ template default: `_stride != 1 ? 0 : _nr/2`.
    return 0 if stride != 1 else window // 2


# --------------------------------------------------------------------------------------------------------------
# Reading each layer's details


def read_input(reader: DlibReader, layer: Layer) -> None:
    reader.expect_string("input_rgb_image_sized")
    layer.found["mean"] = tuple(reader.read_float() for _ in range(3))
    size = layer.spec["size"]
    reader.expect_int(size, "input rows")
    reader.expect_int(size, "input columns")


def read_con(reader: DlibReader, layer: Layer) -> None:
    reader.expect_string("con_4")
    params = reader.read_tensor()
    filters, kernel, stride = layer.spec["filters"], layer.spec["kernel"], layer.spec["stride"]
    reader.expect_int(filters, "con filters")
    reader.expect_int(kernel, "con rows")
    reader.expect_int(kernel, "con columns")
    reader.expect_int(stride, "con stride_y")
    reader.expect_int(stride, "con stride_x")
    padding = (reader.read_int(), reader.read_int())
    if padding != (default_padding(kernel, stride),) * 2:
        raise reader.fail(f"con padding {padding} differs from dlib's default for {kernel}x{kernel}/{stride}")
    weight_dims = reader.read_alias()
    bias_dims = reader.read_alias()
    if weight_dims[0] != filters or weight_dims[2:] != (kernel, kernel) or bias_dims != (1, filters, 1, 1):
        raise reader.fail(f"con parameter shapes {weight_dims} and {bias_dims} do not fit the layer")
    weight_count = math.prod(weight_dims)
    if params.size != weight_count + filters:
        raise reader.fail(f"con holds {params.size} parameters, its shapes need {weight_count + filters}")
    flat = params.reshape(-1)
    layer.found["weight"] = flat[:weight_count].reshape(weight_dims)
    layer.found["bias"] = flat[weight_count:]
    layer.found["padding"] = padding[0]
    layer.found["parameters"] = params.size
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        reader.read_float()


def read_affine(reader: DlibReader, layer: Layer) -> None:
    reader.expect_string("affine_")
    params = reader.read_tensor()
    gamma_dims = reader.read_alias()
    beta_dims = reader.read_alias()
    channels = gamma_dims[1]
    if gamma_dims != (1, channels, 1, 1) or beta_dims != gamma_dims or params.size != 2 * channels:
        raise reader.fail(f"affine shapes {gamma_dims}, {beta_dims} with {params.size} parameters")
    reader.expect_int(0, "affine mode (CONV_MODE)")
    flat = params.reshape(-1)
    layer.found["gamma"] = flat[:channels]
    layer.found["beta"] = flat[channels:]
    layer.found["parameters"] = params.size


def read_pool(reader: DlibReader, layer: Layer, name: str) -> None:
    reader.expect_string(name)
    window, stride = layer.spec["window"], layer.spec["stride"]
    reader.expect_int(window, "pool rows")
    reader.expect_int(window, "pool columns")
    reader.expect_int(stride, "pool stride_y")
    reader.expect_int(stride, "pool stride_x")
    padding = (reader.read_int(), reader.read_int())
    if padding != (default_padding(window, stride),) * 2:
        raise reader.fail(f"pool padding {padding} differs from dlib's default for {window}x{window}/{stride}")
    layer.found["padding"] = padding[0]


def read_fc(reader: DlibReader, layer: Layer) -> None:
    reader.expect_string("fc_2")
    outputs = layer.spec["outputs"]
    reader.expect_int(outputs, "fc outputs")
    inputs = reader.read_int()
    params = reader.read_tensor()
    weight_dims = reader.read_alias()
    reader.read_alias()  # the bias alias exists even when the layer has no bias
    reader.expect_int(1, "fc bias mode (FC_NO_BIAS)")
    if weight_dims != (inputs, outputs, 1, 1) or params.size != inputs * outputs:
        raise reader.fail(f"fc weight shape {weight_dims} with {params.size} parameters")
    # dlib computes output = input x W with W stored inputs-major, which is exactly ONNX MatMul's layout.
    layer.found["weight"] = params.reshape(inputs, outputs)
    layer.found["parameters"] = params.size
    for _ in range(4):
        reader.read_float()


def read_loss(reader: DlibReader, layer: Layer) -> None:
    reader.expect_string("loss_metric_2")
    layer.found["margin"] = reader.read_float()
    layer.found["distance_threshold"] = reader.read_float()


def read_details(reader: DlibReader, layer: Layer) -> None:
    if layer.kind == "con":
        read_con(reader, layer)
    elif layer.kind == "affine":
        read_affine(reader, layer)
    elif layer.kind == "relu":
        reader.expect_string("relu_")
    elif layer.kind == "add_prev":
        reader.expect_string("add_prev_")
    elif layer.kind == "max_pool":
        read_pool(reader, layer, "max_pool_2")
    elif layer.kind == "avg_pool":
        read_pool(reader, layer, "avg_pool_2")
    elif layer.kind == "fc":
        read_fc(reader, layer)
    else:
        raise reader.fail(f"no reader for layer kind {layer.kind}")


def read_network(data: bytes) -> list[Layer]:
    """Fills every layer of the chain from the file, in the order dlib's deserializers consume it.

    dlib writes a wrapper's version, then its sub-network, then its own state, so the file holds the versions
    from the loss inwards, then the input layer, then each layer's state from the innermost outwards.
    """
    layers = describe_network()
    reader = DlibReader(data)
    stateful: list[Layer] = []
    for layer in layers:
        if layer.kind == "loss_metric":
            reader.expect_int(1, "add_loss_layer version")
            read_loss(reader, layer)
        elif layer.kind in ("tag", "skip"):
            reader.expect_int(1, f"add_{layer.kind}_layer version")
        elif layer.kind == "input":
            read_input(reader, layer)
        elif layer is layers[-2]:
            # The add_layer sitting on the input layer is a separate dlib specialisation with its own version.
            reader.expect_int(3, "input add_layer version")
            stateful.append(layer)
        else:
            reader.expect_int(2, "add_layer version")
            stateful.append(layer)
    for layer in reversed(stateful):
        read_details(reader, layer)
        # this_layer_setup_called, gradient_input_is_stale, get_output_and_gradient_input_disabled
        for _ in range(3):
            reader.read_bool()
        # x_grad, cached_output, and params_grad (grad_final for the layer on the input): training state.
        for _ in range(3):
            reader.read_tensor()
        if layer is layers[-2]:
            reader.expect_int(1, "sample expansion factor")
    if reader.pos != len(data):
        raise reader.fail(f"parse ended with {len(data) - reader.pos} bytes left over")
    return layers


# --------------------------------------------------------------------------------------------------------------
# Building the ONNX graph


@dataclass
class Value:
    """A graph value with its static shape for one sample (channels, rows, columns)."""

    name: str
    shape: tuple[int, int, int]


class GraphBuilder:
    """Accumulates nodes and initializers under deterministic, sequential names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.counts: dict[str, int] = {}

    def fresh(self, prefix: str) -> str:
        index = self.counts.get(prefix, 0)
        self.counts[prefix] = index + 1
        return f"{prefix}{index}"

    def constant(self, prefix: str, array: np.ndarray) -> str:
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attributes) -> str:
        name = self.fresh(op.lower())
        output = output or f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attributes))
        return output


def pooled_size(size: int, window: int, stride: int, padding: int) -> int:
    # dlib and ONNX (ceil_mode=0) agree: floor((size + 2*padding - window) / stride) + 1.
    return (size + 2 * padding - window) // stride + 1


def emit_conv(graph: GraphBuilder, value: Value, con: Layer, affine: Layer) -> Value:
    weight = con.found["weight"].astype(np.float64)
    bias = con.found["bias"].astype(np.float64)
    if weight.shape[1] != value.shape[0]:
        raise DlibFormatError(f"convolution expects {weight.shape[1]} channels, gets {value.shape[0]}")
    gamma = affine.found["gamma"].astype(np.float64)
    beta = affine.found["beta"].astype(np.float64)
    if gamma.shape[0] != weight.shape[0]:
        raise DlibFormatError(f"affine over {gamma.shape[0]} channels follows a {weight.shape[0]}-filter convolution")
    # affine(conv(x)) = gamma*(W*x + b) + beta: scale each output filter, fold the shift into the bias.
    folded_weight = (weight * gamma[:, None, None, None]).astype(np.float32)
    folded_bias = (bias * gamma + beta).astype(np.float32)
    kernel, stride, padding = con.spec["kernel"], con.spec["stride"], con.found["padding"]
    output = graph.node(
        "Conv",
        [value.name, graph.constant("conv_weight", folded_weight), graph.constant("conv_bias", folded_bias)],
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=[padding] * 4,
        dilations=[1, 1],
        group=1,
    )
    rows = pooled_size(value.shape[1], kernel, stride, padding)
    cols = pooled_size(value.shape[2], kernel, stride, padding)
    return Value(output, (weight.shape[0], rows, cols))


def emit_pool(graph: GraphBuilder, value: Value, layer: Layer) -> Value:
    window, stride, padding = layer.spec["window"], layer.spec["stride"], layer.found["padding"]
    if window == 0:  # dlib's "pool everything"
        return Value(graph.node("GlobalAveragePool", [value.name]), (value.shape[0], 1, 1))
    attributes = {"kernel_shape": [window, window], "strides": [stride, stride], "pads": [padding] * 4}
    if layer.kind == "max_pool":
        output = graph.node("MaxPool", [value.name], **attributes)
    else:
        # dlib averages over the in-image part of a window only.
        output = graph.node("AveragePool", [value.name], count_include_pad=0, **attributes)
    rows = pooled_size(value.shape[1], window, stride, padding)
    cols = pooled_size(value.shape[2], window, stride, padding)
    return Value(output, (value.shape[0], rows, cols))


def pad_to(graph: GraphBuilder, value: Value, shape: tuple[int, int, int]) -> Value:
    extra = [target - have for target, have in zip(shape, value.shape)]
    if extra == [0, 0, 0]:
        return value
    pads = np.array([0, 0, 0, 0, 0, *extra], dtype=np.int64)
    return Value(graph.node("Pad", [value.name, graph.constant("pad_amounts", pads)], mode="constant"), shape)


def emit_add(graph: GraphBuilder, left: Value, right: Value) -> Value:
    # dlib's add_prev sums tensors of different sizes as if both were zero-extended (at the far end of every
    # axis) to the larger size: that is how a down-block's shortcut gains channels and how the last two
    # down-blocks reconcile a main path one row/column smaller than the pooled shortcut.
    shape = tuple(max(a, b) for a, b in zip(left.shape, right.shape))
    left, right = pad_to(graph, left, shape), pad_to(graph, right, shape)
    return Value(graph.node("Add", [left.name, right.name]), shape)


def build_graph(layers: list[Layer]) -> tuple[onnx.GraphProto, list[str]]:
    """Emits the chain innermost first; returns the graph and a log of the shapes along the way."""
    graph = GraphBuilder()
    log: list[str] = []
    chain = list(reversed(layers))
    size = chain[0].spec["size"]
    value = Value("input", (3, size, size))
    tags: dict[int, Value] = {}
    index = 1
    while index < len(chain):
        layer = chain[index]
        if layer.kind == "con":
            affine = chain[index + 1] if index + 1 < len(chain) else None
            if affine is None or affine.kind != "affine":
                raise DlibFormatError("a convolution without a following affine layer cannot be folded")
            value = emit_conv(graph, value, layer, affine)
            log.append(f"conv {layer.spec['kernel']}x{layer.spec['kernel']}/{layer.spec['stride']} "
                       f"pad {layer.found['padding']} -> {value.shape}")
            index += 2
            continue
        if layer.kind == "affine":
            raise DlibFormatError("an affine layer not directly after a convolution")
        if layer.kind == "relu":
            value = Value(graph.node("Relu", [value.name]), value.shape)
        elif layer.kind in ("max_pool", "avg_pool"):
            value = emit_pool(graph, value, layer)
            log.append(f"{layer.kind} {layer.spec['window']}/{layer.spec['stride']} -> {value.shape}")
        elif layer.kind == "tag":
            tags[layer.spec["tag"]] = value
        elif layer.kind == "skip":
            value = tags[layer.spec["tag"]]
        elif layer.kind == "add_prev":
            before = value.shape
            value = emit_add(graph, value, tags[layer.spec["tag"]])
            log.append(f"add {before} + {tags[layer.spec['tag']].shape} -> {value.shape}")
        elif layer.kind == "fc":
            weight = layer.found["weight"]
            if weight.shape[0] != math.prod(value.shape):
                raise DlibFormatError(f"fc expects {weight.shape[0]} inputs, gets {math.prod(value.shape)}")
            flat = graph.node("Flatten", [value.name], axis=1)
            output = graph.node("MatMul", [flat, graph.constant("fc_weight", weight)], output="embedding")
            value = Value(output, (weight.shape[1], 1, 1))
            log.append(f"fc {weight.shape[0]} -> {weight.shape[1]}")
        elif layer.kind == "loss_metric":
            pass  # training-only; the embedding is the fc output
        else:
            raise DlibFormatError(f"no ONNX lowering for layer kind {layer.kind}")
        index += 1
    if value.name != "embedding":
        raise DlibFormatError("the chain did not end in the fc layer")
    batch_input = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])
    batch_output = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", value.shape[0]])
    onnx_graph = helper.make_graph(
        graph.nodes, "dlib_face_recognition_resnet_model_v1", [batch_input], [batch_output], graph.initializers
    )
    return onnx_graph, log


def build_model(layers: list[Layer]) -> tuple[onnx.ModelProto, list[str]]:
    graph, log = build_graph(layers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model, log


def write_atomically(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def convert(dat: Path, out: Path) -> None:
    layers = read_network(dat.read_bytes())
    parameters = sum(layer.found.get("parameters", 0) for layer in layers)
    if parameters != EXPECTED_PARAMETERS:
        raise DlibFormatError(f"{dat}: {parameters} parameters, expected {EXPECTED_PARAMETERS}")
    counts = {kind: sum(1 for layer in layers if layer.kind == kind) for kind in ("con", "affine", "fc")}
    loss = layers[0].found
    mean = layers[-1].found["mean"]
    print(f"convert_dlib: parsed {dat} to its last byte: {parameters} parameters, "
          f"{counts['con']} con, {counts['affine']} affine, {counts['fc']} fc", file=sys.stderr)
    print(f"convert_dlib: loss_metric margin {loss['margin']:.6g}, distance threshold "
          f"{loss['distance_threshold']:.6g}", file=sys.stderr)
    print(f"convert_dlib: input mean (R, G, B) = ({mean[0]:.6f}, {mean[1]:.6f}, {mean[2]:.6f}), scale 1/256",
          file=sys.stderr)
    model, log = build_model(layers)
    for line in log:
        print(f"convert_dlib:   {line}", file=sys.stderr)
    payload = model.SerializeToString(deterministic=True)
    write_atomically(out, payload)
    print(f"convert_dlib: wrote {out} ({len(payload)} bytes, sha256 {hashlib.sha256(payload).hexdigest()})",
          file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dat", type=Path, required=True, help="dlib_face_recognition_resnet_model_v1.dat")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    args = parser.parse_args()
    try:
        convert(args.dat, args.out)
    except (DlibFormatError, OSError, onnx.checker.ValidationError) as e:
        print(f"convert_dlib: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
