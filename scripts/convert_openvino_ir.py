"""Converts the Open Model Zoo `face-reidentification-retail-0095` OpenVINO IR (v11, FP16) into a deterministic ONNX file.

Only numpy and onnx are used, so the set-up can convert the model on any machine without OpenVINO installed; the
separate `verify_openvino_conversion.py` proves the result against the OpenVINO runtime.

The IR holds a small op set (Const, Convert, Convolution, GroupConvolution, PReLU, Add, Multiply, AvgPool, Sigmoid,
Parameter, Result); anything else is refused rather than guessed. FP16 constants decompressed by a Convert are folded
into float32 initializers, which is what OpenVINO itself does at load time, so the ONNX computes in float32 on the
same weights.

The output bytes depend only on the IR bytes: node and tensor names come from the IR's layer ids and names, nodes are
emitted in a topological order with ties broken by layer id, initializers are sorted by name, and the producer
fields and IR version are fixed.

Usage:
    convert_openvino_ir.py --xml face-reidentification-retail-0095.xml --bin face-reidentification-retail-0095.bin \
        --out models/face-reid-retail-0095.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# IR version 8 is the one that goes with opset 17; pinning it keeps the bytes independent of the onnx package's
# default, which moves with every release.
ONNX_IR_VERSION = 8
PRODUCER_NAME = "facematch-convert-openvino-ir"
PRODUCER_VERSION = "1"

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
BATCH_DIM = "batch"

IR_ELEMENT_TYPES = {
    "f16": np.float16,
    "f32": np.float32,
    "i32": np.int32,
    "i64": np.int64,
    "u8": np.uint8,
}

SUPPORTED_TYPES = {
    "Parameter", "Result", "Const", "Convert", "Convolution", "GroupConvolution",
    "PReLU", "Add", "Multiply", "AvgPool", "Sigmoid",
}


class ConversionError(Exception):
    """The IR holds something this converter does not translate faithfully."""


@dataclass
class Port:
    shape: tuple[int, ...]
    precision: str


@dataclass
class Layer:
    id: int
    name: str
    type: str
    data: dict[str, str]
    inputs: dict[int, Port] = field(default_factory=dict)
    outputs: dict[int, Port] = field(default_factory=dict)


@dataclass
class IrGraph:
    layers: dict[int, Layer]
    # (to_layer, to_port) -> (from_layer, from_port); an input port has exactly one producer.
    producers: dict[tuple[int, int], tuple[int, int]]
    weights: bytes


def parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.replace(" ", "").split(",") if v != ""]


def parse_ports(element: ET.Element | None) -> dict[int, Port]:
    ports: dict[int, Port] = {}
    if element is None:
        return ports
    for port in element.findall("port"):
        shape = tuple(int(d.text) for d in port.findall("dim"))
        ports[int(port.get("id"))] = Port(shape=shape, precision=port.get("precision", ""))
    return ports


def read_ir(xml_path: Path, bin_path: Path) -> IrGraph:
    root = ET.parse(xml_path).getroot()
    if root.tag != "net" or root.get("version") not in {"10", "11"}:
        raise ConversionError(f"reading {xml_path}: expected an OpenVINO IR v10/v11 <net>, got <{root.tag}> "
                              f"version {root.get('version')}")
    layers: dict[int, Layer] = {}
    for element in root.find("layers"):
        data_element = element.find("data")
        layer = Layer(
            id=int(element.get("id")),
            name=element.get("name"),
            type=element.get("type"),
            data=dict(data_element.attrib) if data_element is not None else {},
            inputs=parse_ports(element.find("input")),
            outputs=parse_ports(element.find("output")),
        )
        if layer.type not in SUPPORTED_TYPES:
            raise ConversionError(f"layer {layer.id} '{layer.name}': unsupported op type {layer.type}")
        layers[layer.id] = layer
    producers: dict[tuple[int, int], tuple[int, int]] = {}
    for edge in root.find("edges"):
        key = (int(edge.get("to-layer")), int(edge.get("to-port")))
        if key in producers:
            raise ConversionError(f"layer {key[0]} port {key[1]}: more than one incoming edge")
        producers[key] = (int(edge.get("from-layer")), int(edge.get("from-port")))
    return IrGraph(layers=layers, producers=producers, weights=bin_path.read_bytes())


def sort_topologically(graph: IrGraph) -> list[int]:
    """Kahn's algorithm with the smallest layer id first, so the order is a function of the IR alone."""
    dependants: dict[int, list[int]] = {lid: [] for lid in graph.layers}
    pending = {lid: 0 for lid in graph.layers}
    for (to_layer, _), (from_layer, _) in graph.producers.items():
        dependants[from_layer].append(to_layer)
        pending[to_layer] += 1
    ready = [lid for lid, count in pending.items() if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        lid = heapq.heappop(ready)
        order.append(lid)
        for nxt in dependants[lid]:
            pending[nxt] -= 1
            if pending[nxt] == 0:
                heapq.heappush(ready, nxt)
    if len(order) != len(graph.layers):
        raise ConversionError("the IR graph has a cycle")
    return order


def tensor_name(layer: Layer) -> str:
    """A readable, unique name that points back at the IR layer it came from."""
    safe = re.sub(r"[^A-Za-z0-9_.]", "_", layer.name)
    return f"{safe}__{layer.id}"


def read_const(graph: IrGraph, layer: Layer) -> np.ndarray:
    element_type = layer.data.get("element_type")
    if element_type not in IR_ELEMENT_TYPES:
        raise ConversionError(f"const {layer.id} '{layer.name}': unsupported element type {element_type}")
    dtype = np.dtype(IR_ELEMENT_TYPES[element_type]).newbyteorder("<")
    shape = tuple(parse_ints(layer.data.get("shape", "")))
    offset, size = int(layer.data["offset"]), int(layer.data["size"])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != expected:
        raise ConversionError(f"const {layer.id} '{layer.name}': size {size} does not match shape {shape} of "
                              f"{element_type} ({expected} bytes)")
    if offset + size > len(graph.weights):
        raise ConversionError(f"const {layer.id} '{layer.name}': bytes {offset}..{offset + size} lie past the end "
                              f"of the weights file ({len(graph.weights)} bytes)")
    values = np.frombuffer(graph.weights, dtype=dtype, count=int(np.prod(shape, dtype=np.int64)), offset=offset)
    out_shape = layer.outputs[0].shape if layer.outputs else shape
    if tuple(out_shape) != shape:
        raise ConversionError(f"const {layer.id} '{layer.name}': data shape {shape} differs from port shape "
                              f"{out_shape}")
    return values.reshape(shape).astype(dtype.newbyteorder("="))


def spatial_attrs(layer: Layer) -> dict[str, object]:
    """Strides, dilations and padding as ONNX wants them; IR pads are begin/end per axis, ONNX's are all begins
    then all ends."""
    attrs: dict[str, object] = {}
    if "strides" in layer.data:
        attrs["strides"] = parse_ints(layer.data["strides"])
    if "dilations" in layer.data:
        attrs["dilations"] = parse_ints(layer.data["dilations"])
    auto_pad = layer.data.get("auto_pad", "explicit").lower()
    if auto_pad in {"explicit", "notset", ""}:
        begins = parse_ints(layer.data.get("pads_begin", "0, 0"))
        ends = parse_ints(layer.data.get("pads_end", "0, 0"))
        attrs["pads"] = begins + ends
    elif auto_pad in {"same_upper", "same_lower", "valid"}:
        attrs["auto_pad"] = auto_pad.upper()
    else:
        raise ConversionError(f"layer {layer.id} '{layer.name}': unknown auto_pad {auto_pad}")
    return attrs


class OnnxBuilder:
    """Accumulates ONNX nodes and initializers while walking the IR in topological order."""

    def __init__(self, graph: IrGraph) -> None:
        self.graph = graph
        # (layer_id, out_port) -> ONNX tensor name for values computed at run time
        self.values: dict[tuple[int, int], str] = {}
        # (layer_id, out_port) -> folded constant, kept until a consumer decides how to store it
        self.constants: dict[tuple[int, int], np.ndarray] = {}
        # (layer_id, out_port, suffix) -> initializer name; a suffix marks a reshaped copy of the constant
        self.constant_names: dict[tuple[int, int, str], str] = {}
        self.initializers: dict[str, np.ndarray] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.output_name: str | None = None
        self.embedding_dim = 0

    def source(self, layer: Layer, port: int) -> tuple[int, int]:
        key = (layer.id, port)
        if key not in self.graph.producers:
            raise ConversionError(f"layer {layer.id} '{layer.name}': input port {port} is not connected")
        return self.graph.producers[key]

    def input_value(self, layer: Layer, port: int) -> str:
        """The ONNX name of an input, registering a folded constant as an initializer on first use."""
        src = self.source(layer, port)
        if src in self.values:
            return self.values[src]
        if src in self.constants:
            return self.register_initializer(src, self.constants[src])
        raise ConversionError(f"layer {layer.id} '{layer.name}': input port {port} comes from layer {src[0]} "
                              f"which was not converted")

    def constant_input(self, layer: Layer, port: int) -> tuple[tuple[int, int], np.ndarray]:
        src = self.source(layer, port)
        if src not in self.constants:
            raise ConversionError(f"layer {layer.id} '{layer.name}': input port {port} must be a constant")
        return src, self.constants[src]

    def register_initializer(self, src: tuple[int, int], array: np.ndarray, suffix: str = "") -> str:
        key = (src[0], src[1], suffix)
        if key in self.constant_names:
            return self.constant_names[key]
        name = tensor_name(self.graph.layers[src[0]]) + suffix
        if name in self.initializers:
            raise ConversionError(f"initializer name {name} is used twice")
        self.initializers[name] = np.ascontiguousarray(array.astype(np.float32) if array.dtype == np.float16
                                                       else array)
        self.constant_names[key] = name
        return name

    def emit(self, op: str, layer: Layer, inputs: list[str], **attrs: object) -> str:
        out = tensor_name(layer)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.values[(layer.id, max(layer.outputs))] = out
        return out

    def convert(self, layer: Layer) -> None:
        handler = getattr(self, f"convert_{layer.type}")
        handler(layer)

    def convert_Parameter(self, layer: Layer) -> None:
        if self.values:
            raise ConversionError("the IR has more than one Parameter; the recognizer takes one image batch")
        shape = parse_ints(layer.data.get("shape", ""))
        if len(shape) != 4 or shape[1:] != [3, 128, 128]:
            raise ConversionError(f"parameter '{layer.name}': expected [N,3,128,128], got {shape}")
        if layer.data.get("element_type") != "f32":
            raise ConversionError(f"parameter '{layer.name}': expected f32 input, got {layer.data.get('element_type')}")
        self.values[(layer.id, 0)] = INPUT_NAME

    def convert_Const(self, layer: Layer) -> None:
        self.constants[(layer.id, 0)] = read_const(self.graph, layer)

    def convert_Convert(self, layer: Layer) -> None:
        src = self.source(layer, 0)
        destination = layer.data.get("destination_type")
        if src not in self.constants or destination != "f32":
            # A run-time Convert would change the arithmetic; this IR only uses Convert to decompress weights.
            raise ConversionError(f"convert {layer.id} '{layer.name}': only Const -> f32 decompression is supported")
        self.constants[(layer.id, max(layer.outputs))] = self.constants[src].astype(np.float32)

    def convert_Convolution(self, layer: Layer) -> None:
        data = self.input_value(layer, 0)
        _, weights = self.constant_input(layer, 1)
        if weights.ndim != 4:
            raise ConversionError(f"convolution {layer.id} '{layer.name}': expected 4-d weights, got {weights.shape}")
        weight_name = self.input_value(layer, 1)
        self.emit("Conv", layer, [data, weight_name], kernel_shape=list(weights.shape[2:]), group=1,
                  **spatial_attrs(layer))

    def convert_GroupConvolution(self, layer: Layer) -> None:
        data = self.input_value(layer, 0)
        src, weights = self.constant_input(layer, 1)
        if weights.ndim != 5:
            raise ConversionError(f"group convolution {layer.id} '{layer.name}': expected 5-d weights "
                                  f"[G, O/G, I/G, kH, kW], got {weights.shape}")
        groups, out_per_group, in_per_group, kh, kw = weights.shape
        merged = weights.reshape(groups * out_per_group, in_per_group, kh, kw)
        weight_name = self.register_initializer(src, merged, suffix="__grouped")
        self.emit("Conv", layer, [data, weight_name], kernel_shape=[kh, kw], group=int(groups),
                  **spatial_attrs(layer))

    def convert_PReLU(self, layer: Layer) -> None:
        data = self.input_value(layer, 0)
        src, slope = self.constant_input(layer, 1)
        channels = layer.inputs[0].shape[1]
        if slope.size == 1:
            # One shared slope is exactly LeakyRelu (same comparison, same float32 product); onnxruntime fuses
            # LeakyRelu into the preceding Conv but runs a broadcasting PRelu as a separate, slow pass, which was
            # about half of the network's time.
            self.emit("LeakyRelu", layer, [data], alpha=float(slope.reshape(-1)[0]))
            return
        if slope.ndim == 1 and slope.shape[0] == channels:
            # OpenVINO applies a 1-d slope along the channel axis; ONNX broadcasts from the right, so the slope
            # needs trailing unit axes to land on C instead of W.
            slope_name = self.register_initializer(src, slope.reshape(channels, 1, 1), suffix="__per_channel")
        else:
            raise ConversionError(f"prelu {layer.id} '{layer.name}': slope shape {slope.shape} does not match "
                                  f"{channels} channels")
        self.emit("PRelu", layer, [data, slope_name])

    def binary(self, op: str, layer: Layer) -> None:
        broadcast = layer.data.get("auto_broadcast", "numpy")
        if broadcast != "numpy":
            raise ConversionError(f"{layer.type.lower()} {layer.id} '{layer.name}': auto_broadcast {broadcast} "
                                  f"is not numpy")
        self.emit(op, layer, [self.input_value(layer, 0), self.input_value(layer, 1)])

    def convert_Add(self, layer: Layer) -> None:
        self.binary("Add", layer)

    def convert_Multiply(self, layer: Layer) -> None:
        self.binary("Mul", layer)

    def convert_Sigmoid(self, layer: Layer) -> None:
        self.emit("Sigmoid", layer, [self.input_value(layer, 0)])

    def convert_AvgPool(self, layer: Layer) -> None:
        data = self.input_value(layer, 0)
        kernel = parse_ints(layer.data["kernel"])
        spatial_in = list(layer.inputs[0].shape[2:])
        attrs = spatial_attrs(layer)
        pads = attrs.get("pads", [0] * (2 * len(kernel)))
        if kernel == spatial_in and not any(pads) and list(layer.outputs.values())[0].shape[2:] == (1, 1):
            # A window covering the whole map with no padding is a global mean; saying so lets the runtime pick
            # its reduction kernel and keeps the graph valid if the spatial size is ever made dynamic.
            self.emit("GlobalAveragePool", layer, [data])
            return
        exclude_pad = layer.data.get("exclude-pad", "false").lower() == "true"
        rounding = layer.data.get("rounding_type", "floor").lower()
        if rounding not in {"floor", "ceil"}:
            raise ConversionError(f"avgpool {layer.id} '{layer.name}': unknown rounding_type {rounding}")
        attrs.pop("dilations", None)
        self.emit("AveragePool", layer, [data], kernel_shape=kernel, count_include_pad=0 if exclude_pad else 1,
                  ceil_mode=1 if rounding == "ceil" else 0, **attrs)

    def convert_Result(self, layer: Layer) -> None:
        if self.output_name is not None:
            raise ConversionError("the IR has more than one Result; the recognizer has one embedding output")
        data = self.input_value(layer, 0)
        shape = layer.inputs[0].shape
        if len(shape) == 4 and shape[2:] == (1, 1):
            self.nodes.append(helper.make_node("Flatten", [data], [OUTPUT_NAME], name="flatten_embedding", axis=1))
        elif len(shape) == 2:
            self.nodes.append(helper.make_node("Identity", [data], [OUTPUT_NAME], name="embedding_identity"))
        else:
            raise ConversionError(f"result '{layer.name}': expected [N,D,1,1] or [N,D], got {shape}")
        self.output_name = OUTPUT_NAME
        self.embedding_dim = int(shape[1])


def build_model(graph: IrGraph, xml_sha256: str, bin_sha256: str) -> onnx.ModelProto:
    builder = OnnxBuilder(graph)
    for lid in sort_topologically(graph):
        builder.convert(graph.layers[lid])
    if builder.output_name is None:
        raise ConversionError("the IR has no Result")
    initializers = [numpy_helper.from_array(builder.initializers[name], name)
                    for name in sorted(builder.initializers)]
    graph_proto = helper.make_graph(
        builder.nodes,
        "face_reidentification_retail_0095",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, 3, 128, 128])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, builder.embedding_dim])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph_proto,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        doc_string="face-reidentification-retail-0095 (Intel Open Model Zoo, Apache-2.0) converted from OpenVINO IR; "
                   "input BGR 0..255 NCHW, output 256-d embedding compared by cosine",
    )
    model.ir_version = ONNX_IR_VERSION
    helper.set_model_props(model, {"source_xml_sha256": xml_sha256, "source_bin_sha256": bin_sha256})
    return model


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(xml_path: Path, bin_path: Path, out_path: Path) -> str:
    """Writes the ONNX file and returns its sha256."""
    graph = read_ir(xml_path, bin_path)
    model = build_model(graph, sha256_of(xml_path), sha256_of(bin_path))
    onnx.checker.check_model(model, full_check=True)
    payload = model.SerializeToString(deterministic=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp.write_bytes(payload)
    tmp.replace(out_path)
    return hashlib.sha256(payload).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xml", type=Path, required=True, help="OpenVINO IR .xml")
    parser.add_argument("--bin", type=Path, required=True, help="OpenVINO IR .bin holding the weights")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    args = parser.parse_args(argv)
    try:
        digest = convert(args.xml, args.bin, args.out)
    except (ConversionError, OSError, ET.ParseError, onnx.checker.ValidationError) as err:
        print(f"convert_openvino_ir: {err}", file=sys.stderr)
        return 1
    print(f"{digest}  {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
