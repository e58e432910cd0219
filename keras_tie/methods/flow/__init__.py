"""The approximate-mass flow (004_f7d5548531a0fef9.txt): the RealNVP (`realnvp`,
`coupling_net`, `bijectors`), its train step with the mass penalty (`model`), the
approximate mass (`approximate_mass`), the per-epoch mass trace (`mass_trace`) and the run
recipe (`recipe`). Needs tensorflow-probability, which the classifiers do not."""
