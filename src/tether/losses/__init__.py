"""Pure loss functions: tensors in, a NamedTuple out; no configs, no I/O, no devices."""
