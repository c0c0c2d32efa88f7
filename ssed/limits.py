"""How much a source may read and publish: the one table of those limits.

A source never holds or publishes more than these, whatever its command prints or its file
holds: `sources.py` reads files within them and `children.ChildProc` kills a command whose output
goes over `MAX_SOURCE_EVENT`.
"""

# One event a source publishes: a command's output, the content of a `file` or `quotes` file,
# one line of `messages`. The same figure for every source, so one rule says what "too big" is.
MAX_SOURCE_EVENT = 1 << 20

# A `messages` file, read whole at start and held in memory for the round robin: many events'
# worth, but bounded (a 100 MB file is a mistake, not a ticker).
MAX_MESSAGES_FILE = 16 << 20

# Quotes a `quotes` source keeps for new subscribers (sources.Quotes.known): a publisher who
# makes up a symbol per event cannot grow it without end. A 1 MiB quotes file holds fewer.
MAX_QUOTES = 100_000
