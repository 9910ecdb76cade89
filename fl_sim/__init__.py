"""fl_sim: simulated federated learning on Flower + Ray, for membership-inference audits."""

__version__ = "0.1.0"
