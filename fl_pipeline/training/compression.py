"""What crosses the network in a round, measured; and the updates that make it smaller.

TFF 0.87's aggregators report no byte counts, so FedKB measures them where
they arise, in TensorFlow at the clients of every real round, and releases
them as metrics (`metrics.csv`; `run.summarize` sums them into summary.json):

- Upload (`MeasureUpload`, around the weighted mean): each client's update
  encoded with the very encoders of the aggregator's `EncodedSumFactory`
  (identity, i.e. float32, on the plain path), summed over the encoded
  tensors' sizes and dtypes (values, min/max, bitpacked words: whatever the
  encoder emits), plus the client's float32 weight. Reported per round as
  the sum over clients, the largest client and the number of clients.
- Download (`measured_broadcast`): the model as each client receives it.

Not counted: the scalars TFF's adaptive zeroing and clipping collect from
each client for their norm estimates (two float32 values), the broadcast
norms and encoder parameters (a few bytes), and, in the simulation, TFF's
echo of the decode parameters (its own TODO, b/139844355).

Smaller updates (`--compress`, `compressed_mean`):
- Hadamard rotation + uniform stochastic quantization to `bits` bits
  (tensorflow_model_optimization's `hadamard_quantization`, the encoder of
  Suresh et al., 2017) of every tensor above 20,000 values, in TFF's
  `EncodedSumFactory`.
- Only a subset of the vocabulary's rows (`EmbeddingRowBlocks`): each round
  the server picks the same rows for everyone from the round number alone
  (the most frequent words, whose rows carry most of the update, always,
  and a block of the others that rotates every round: Caldas et al., 2018,
  in its "the server chooses" form). Clients never send row indices: a
  per-client index list would say which words each phone typed.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

# TFF's compression_aggregator: EncodedSumFactory.quantize_above_threshold(8, 20000).
TFF8_BITS = 8
QUANTIZE_ABOVE = 20_000

EncoderFn = Callable[[tf.TensorSpec], "te.core.GatherEncoder"]


def quantize_above(bits: int, threshold: int = QUANTIZE_ABOVE, rotate: bool = False) -> EncoderFn:
    """The encoder_fn of `tff.aggregators.EncodedSumFactory`: tensors above
    `threshold` values quantized to `bits` (after a Hadamard rotation if
    `rotate`), the others sent as they are. bits=0: nothing is quantized.
    With bits=8 and no rotation it is the encoder_fn of TFF's
    `EncodedSumFactory.quantize_above_threshold`, which `compression_aggregator` uses."""

    def encoder_fn(spec: tf.TensorSpec):
        if bits and spec.shape.num_elements() > threshold:
            encoder = (te.encoders.hadamard_quantization(bits) if rotate
                       else te.encoders.uniform_quantization(bits))
        else:
            encoder = te.encoders.identity()
        return te.encoders.as_gather_encoder(encoder, spec)

    return encoder_fn


def tensor_bytes(structure) -> tf.Tensor:
    """Bytes of every tensor in `structure`: elements x dtype size, as int64."""
    sizes = [tf.size(t, out_type=tf.int64) * t.dtype.size for t in tf.nest.flatten(structure)]
    return tf.add_n(sizes) if sizes else tf.constant(0, tf.int64)


def encoded_bytes(encoder_fn: EncoderFn | None, value, specs) -> tf.Tensor:
    """Bytes of `value` as `encoder_fn`'s encoders send it (None: as it is).

    FedKB's encoders are stateless (no parameters carried between rounds), so
    the parameters of their initial state are those of every round."""
    if encoder_fn is None:
        return tensor_bytes(value)
    total = tf.constant(0, tf.int64)
    for spec, tensor in zip(tf.nest.flatten(specs), tf.nest.flatten(value)):
        encoder = encoder_fn(spec)
        state = encoder.initial_state()
        if tf.nest.flatten(state):
            raise ValueError("encoded_bytes needs a stateless encoder")
        encode_params, _, _ = encoder.get_params(state)
        encoded, _ = encoder.encode(tensor, encode_params)
        total += tensor_bytes(encoded)
    return total


def _client_byte_measurements(client_bytes) -> collections.OrderedDict:
    """A round's measurements from each client's byte count (at CLIENTS)."""
    one = tff.federated_value(1, tff.CLIENTS)
    return collections.OrderedDict(
        bytes=tff.federated_sum(client_bytes),  # the whole round's traffic
        bytes_max=tff.federated_max(client_bytes),  # the largest client's
        clients=tff.federated_sum(one),
    )


class MeasureUpload(tff.aggregators.WeightedAggregationFactory):
    """The weighted mean `inner`, unchanged, with what each client uploads in
    its measurements (`upload/bytes`, `upload/bytes_max`, `upload/clients`):
    its update encoded by `encoder_fn`, the encoder_fn of the EncodedSumFactory
    inside `inner` (None for a plain sum of float32 values), plus its weight.
    State and result are `inner`'s, so run directories from before resume."""

    def __init__(self, inner: tff.aggregators.WeightedAggregationFactory,
                 encoder_fn: EncoderFn | None = None):
        self._inner = inner
        self._encoder_fn = encoder_fn

    def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
        inner = self._inner.create(value_type, weight_type)
        specs = tff.types.type_to_tf_tensor_specs(value_type)
        encoder_fn = self._encoder_fn

        @tff.tensorflow.computation(value_type, weight_type)
        def client_bytes(value, weight):
            return encoded_bytes(encoder_fn, value, specs) + tensor_bytes(weight)

        @tff.federated_computation(inner.next.type_signature.parameter)
        def next_fn(state, value, weight):
            output = inner.next(state, value, weight)
            upload = _client_byte_measurements(tff.federated_map(client_bytes, (value, weight)))
            measurements = tff.federated_zip(collections.OrderedDict(
                mean=output.measurements, upload=tff.federated_zip(upload)))
            return tff.templates.MeasuredProcessOutput(output.state, output.result, measurements)

        return tff.templates.AggregationProcess(inner.initialize, next_fn)


def encoded_mean(encoder_fn: EncoderFn) -> MeasureUpload:
    """TFF's weighted mean of values encoded by `encoder_fn`, its upload measured."""
    return MeasureUpload(tff.aggregators.MeanFactory(tff.aggregators.EncodedSumFactory(encoder_fn)),
                         encoder_fn)


def embedding_rows(round_num: tf.Tensor, vocab_size: int, rows: int) -> tf.Tensor:
    """The vocabulary rows of a round: the rows // 2 most frequent words (the
    vocabulary is in frequency order) and a block of the others that moves on
    every round. A function of the round number alone: the same for everyone."""
    frequent = rows // 2
    block = rows - frequent
    others = vocab_size - frequent
    rotating = frequent + (round_num * block + tf.range(block)) % others
    return tf.concat([tf.range(frequent), rotating], axis=0)


class EmbeddingRowBlocks(tff.aggregators.WeightedAggregationFactory):
    """Clients send only the server's rows of each per-word tensor (the
    embedding, tied to the output layer, and the output bias: every tensor
    whose first dimension is the vocabulary); `inner` averages those, and the
    other rows' update is zero this round. The state adds the round number,
    from which clients and server derive the rows (`embedding_rows`)."""

    def __init__(self, inner: tff.aggregators.WeightedAggregationFactory, vocab_size: int,
                 fraction: float):
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        self._inner = inner
        self._vocab_size = vocab_size
        self._rows = max(2, round(fraction * vocab_size))

    def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
        vocab, rows = self._vocab_size, self._rows
        specs = tff.types.type_to_tf_tensor_specs(value_type)
        per_word = [s.shape.rank >= 1 and s.shape[0] == vocab for s in tf.nest.flatten(specs)]
        if not any(per_word):
            raise ValueError(f"no tensor of the update has a first dimension of {vocab} rows")
        sliced_specs = tf.nest.pack_sequence_as(specs, [
            tf.TensorSpec([rows, *s.shape[1:]], s.dtype) if word else s
            for s, word in zip(tf.nest.flatten(specs), per_word)])
        sliced_type = tff.types.tensorflow_to_type(sliced_specs)
        inner = self._inner.create(sliced_type, weight_type)

        def map_per_word(fn, structure):
            return tf.nest.pack_sequence_as(structure, [
                fn(t) if word else t for t, word in zip(tf.nest.flatten(structure), per_word)])

        @tff.tensorflow.computation(value_type, tf.int32)
        def keep_rows(value, round_num):
            selected = embedding_rows(round_num, vocab, rows)
            return map_per_word(lambda t: tf.gather(t, selected), value)

        @tff.tensorflow.computation(sliced_type, tf.int32)
        def put_back(mean, round_num):
            selected = embedding_rows(round_num, vocab, rows)[:, tf.newaxis]
            return map_per_word(
                lambda t: tf.scatter_nd(selected, t, tf.concat([[vocab], tf.shape(t)[1:]], 0)), mean)

        @tff.federated_computation()
        def init_fn():
            return tff.federated_zip(collections.OrderedDict(
                round=tff.federated_value(0, tff.SERVER), inner=inner.initialize()))

        next_round = tff.tensorflow.computation(lambda r: r + 1, tf.int32)

        @tff.federated_computation(init_fn.type_signature.result,
                                   tff.FederatedType(value_type, tff.CLIENTS),
                                   tff.FederatedType(weight_type, tff.CLIENTS))
        def next_fn(state, value, weight):
            sliced = tff.federated_map(keep_rows, (value, tff.federated_broadcast(state.round)))
            output = inner.next(state.inner, sliced, weight)
            result = tff.federated_map(put_back, (output.result, state.round))
            new_state = tff.federated_zip(collections.OrderedDict(
                round=tff.federated_map(next_round, state.round), inner=output.state))
            return tff.templates.MeasuredProcessOutput(new_state, result, output.measurements)

        return tff.templates.AggregationProcess(init_fn, next_fn)


def compressed_mean(bits: int, rows_fraction: float, vocab_size: int):
    """`--compress`: a Hadamard-rotated `bits`-bit encoded mean (bits=0: float32)
    of the round's rows (rows_fraction=1: all of them), its upload measured."""
    return EmbeddingRowBlocks(encoded_mean(quantize_above(bits, rotate=True)), vocab_size,
                              rows_fraction)


def measured_broadcast(model_weights_type) -> tff.learning.templates.DistributionProcess:
    """TFF's broadcast of the model (`build_broadcast_process`), with what each
    client receives in its measurements (`download/bytes`, `bytes_max`, `clients`)."""
    measure = tff.tensorflow.computation(tensor_bytes, model_weights_type)

    @tff.federated_computation()
    def init_fn():
        return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(model_weights_type, tff.SERVER))
    def next_fn(state, weights):
        received = tff.federated_broadcast(weights)
        download = _client_byte_measurements(tff.federated_map(measure, received))
        measurements = tff.federated_zip(collections.OrderedDict(
            download=tff.federated_zip(download)))
        return tff.templates.MeasuredProcessOutput(state, received, measurements)

    return tff.learning.templates.DistributionProcess(init_fn, next_fn)
