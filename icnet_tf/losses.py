"""The segmentation loss over a network's heads, the poly learning rate and TF1 momentum (the
original `train.py`).

Loss = sum over the network's `loss_weights` of weight * L(head)
       + weight_decay * sum(l2_loss(w) for every conv kernel w)   (not biases, not BN),
(ICNet_BN: 0.16 * L(sub4_out) + 0.4 * L(sub24_out) + 1.0 * L(conv6_cls), the original's
cascade label guidance),
L = mean sparse softmax cross entropy over the pixels whose label is < num_classes and !=
ignore_label, the label nearest-neighbour-resized (TF1 defaults) to that head's logits size.

Under a `tf.distribute` strategy each replica returns its SUM of per-pixel losses divided by the
GLOBAL count of valid pixels (all-reduced), and weight decay divided by the number of replicas,
so that the summed gradients equal those of the single-device loss on the whole batch.
"""

import tensorflow as tf


def resize_labels(labels, size):
    """Nearest-neighbour resize of int labels [B, H, W, 1] with the TF1 defaults."""
    return tf.raw_ops.ResizeNearestNeighbor(
        images=labels, size=size, align_corners=False, half_pixel_centers=False
    )


def masked_xent_sum(logits, labels, num_classes, ignore_label):
    """(sum of per-pixel cross entropies, number of valid pixels) for one head; logits of a
    16-bit compute dtype (mixed precision) are cast to float32 first."""
    logits = tf.cast(logits, tf.float32)
    labels = resize_labels(labels, tf.shape(logits)[1:3])[..., 0]
    valid = tf.logical_and(labels < num_classes, labels != ignore_label)
    labels = tf.boolean_mask(labels, valid)
    logits = tf.boolean_mask(logits, valid)
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_sum(xent), tf.cast(tf.size(labels), tf.float32)


def global_sum(value):
    """Sum of `value` over all replicas (itself outside a replica context or with one)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


def num_replicas():
    """Replicas in sync (1 outside a replica context)."""
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else ctx.num_replicas_in_sync


def segmentation_loss(
    outputs, labels, *, head_weights, num_classes, ignore_label, weight_decay, conv_weights
):
    """Total loss (this replica's share) and a dict of the per-head mean losses (global)."""
    total = tf.constant(0.0)
    parts = {}
    for head, weight in head_weights.items():
        if head not in outputs:
            continue
        xent_sum, count = masked_xent_sum(outputs[head], labels, num_classes, ignore_label)
        count = tf.maximum(global_sum(count), 1.0)
        share = xent_sum / count
        parts[head] = share
        total += weight * share
    decay = weight_decay * tf.add_n([tf.nn.l2_loss(w) for w in conv_weights])
    parts['weight_decay'] = decay / num_replicas()
    return total + parts['weight_decay'], parts


class PolyLR(tf.keras.optimizers.schedules.LearningRateSchedule):
    """`base * (1 - step / num_steps) ** power` (the original's poly schedule)."""

    def __init__(self, base, num_steps, power):
        self.base, self.num_steps, self.power = float(base), int(num_steps), float(power)

    def __call__(self, step):
        frac = tf.minimum(tf.cast(step, tf.float32) / self.num_steps, 1.0)
        return self.base * tf.pow(1.0 - frac, self.power)

    def get_config(self):
        return {'base': self.base, 'num_steps': self.num_steps, 'power': self.power}


class TF1Momentum(tf.keras.optimizers.Optimizer):
    """`tf.compat.v1.train.MomentumOptimizer` semantics on the TF2 optimizer machinery.

    accum <- momentum * accum + grad;  var <- var - lr * accum.
    (Keras SGD keeps v <- m v - lr g; w <- w + v, which differs whenever lr changes, as it does
    every step under the poly schedule.)
    """

    def __init__(self, learning_rate, momentum=0.9, name='TF1Momentum', **kwargs):
        super().__init__(name=name, **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.momentum = float(momentum)

    def build(self, var_list):
        super().build(var_list)
        if getattr(self, '_built', False):
            return
        self.accumulators = [self.add_variable_from_reference(v, 'accum') for v in var_list]
        self._built = True

    def update_step(self, gradient, variable):
        lr = tf.cast(self.learning_rate, variable.dtype)
        accum = self.accumulators[self._index_dict[self._var_key(variable)]]
        accum.assign(self.momentum * accum + gradient)
        variable.assign_sub(lr * accum)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                'learning_rate': self._serialize_hyperparameter(self._learning_rate),
                'momentum': self.momentum,
            }
        )
        return config
