"""On-demand tests and status from a terminal: ``warehouse-operator test`` and the kubectl
plugin ``kubectl whc test | status``.

``command`` parses the arguments and runs the commands; ``output`` formats what they print and
picks the exit code (pure); ``cluster`` talks to the Kubernetes API through the official client
library, logged in as kubectl is (imported only when a command runs).
"""
