"""Banned addresses: networks refused until a time. Pure: `now` comes in."""
from .addresses import in_networks


class Bans(dict):
    """ip_network -> until (unix time); expired ones go when next looked at."""

    def banned(self, address, now):
        if not self:
            return False
        for network, until in list(self.items()):
            if until <= now:
                del self[network]
            elif in_networks(address, (network,)):
                return True
        return False

    def current(self, now):
        """The bans still in force, as (network, until)."""
        self.banned("", now)        # drops the expired ones
        return list(self.items())
