"""An example gbdt2nn plugin: the ``huber`` alignment loss and the ``smoothgrad`` attributor (see ``plugin``)."""
