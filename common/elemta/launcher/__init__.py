"""``elemta run`` (``make run``): the whole system on this machine, one process per
service, as Postfix's master(8) runs its daemons. The parts: addresses and ports
(:mod:`.addresses`), child processes (:mod:`.processes`), the embedded nats-server
(:mod:`.natsserver`) or cluster of them (:mod:`.cluster`), restarting what stops on
its own (:mod:`.restart`) and the supervisor that starts and stops them in order
(:mod:`.supervisor`). The command line is :mod:`elemta.cli.run`.
"""
