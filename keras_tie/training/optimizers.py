"""The classifier's optimizer and learning-rate schedule (config section `optimizer`)."""

import keras


def classifier_optimizer(config, steps_per_epoch):
    """The classifier's optimizer (`optimizer.classifier_optimizer`: Adam, Adadelta with
    Keras' rho = 0.95 and epsilon = 1e-7, or SGD with Nesterov momentum 0.9): at
    `optimizer.classifier_lr`, or along its cosine decay to 0 over `epochs * steps_per_epoch`
    updates (`optimizer.classifier_schedule = "cosine"`), after a linear warm-up from 0 over
    `optimizer.warmup_epochs`; with `optimizer.weight_decay` (decoupled, Keras')."""
    o = config.optimizer
    rate = o.classifier_lr
    if o.classifier_schedule == "cosine":
        total = max(config.epochs * steps_per_epoch, 1)
        warmup = min(int(round(o.warmup_epochs * steps_per_epoch)), total - 1)
        if warmup > 0:
            rate = keras.optimizers.schedules.CosineDecay(
                0.0, decay_steps=total - warmup, alpha=0.0, warmup_target=o.classifier_lr,
                warmup_steps=warmup)
        else:
            rate = keras.optimizers.schedules.CosineDecay(o.classifier_lr, decay_steps=total,
                                                          alpha=0.0)
    decay = o.weight_decay or None
    if o.classifier_optimizer == "adadelta":
        return keras.optimizers.Adadelta(rate, weight_decay=decay)
    if o.classifier_optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9, nesterov=True, weight_decay=decay)
    return keras.optimizers.Adam(rate, weight_decay=decay)
