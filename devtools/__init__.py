"""Development launchers: the whole product on one machine (``make run``, ``make serve``).

Not part of any runtime package or the wheel: production starts each component on its own
(``fashion-serving`` or TF Serving, ``fashion-gateway``, ``fashion-batch``). Keeping the launchers
here means the nightly job's package never imports the model server or gRPC.
"""
