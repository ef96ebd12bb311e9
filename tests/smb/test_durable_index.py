"""The detached durable opens of one file are found without looking at all of them (every
CREATE asks for its file's), and the index forgets an open however it stops being detached:
reclaimed, closed, expired or pushed out past the limit."""
from smbring.smb.durable import Durable, DurableOpens


class Open:
    """What DurableOpens reads of an open: its file, its tree and its CREATE's replay key."""

    def __init__(self, key):
        self.key, self.tree, self.create_key = key, None, None


def durable(n: int, key) -> Durable:
    o = Open(key)
    return Durable(open=o, persistent=n.to_bytes(8, "little"), user="u", client_guid=b"g" * 16,
                   create_guid=b"", timeout=60.0, share=("s", "/s"))


def test_detached_opens_are_found_by_file_and_forgotten_every_way():
    now = [0.0]
    opens = DurableOpens(clock=lambda: now[0])
    closed = []
    ds = [durable(i, ("dev", i % 3)) for i in range(9)]
    for d in ds:
        opens.grant(d)
        assert opens.detach(d.open, lambda effects, d=d: closed.append(d), 0, limit=8, effects=[])
    assert closed == [ds[0]]                                   # past the limit: the oldest went
    opens.forget(ds[0].open)
    assert sorted(d.persistent for d in opens.detached_of(("dev", 0))) == [ds[3].persistent, ds[6].persistent]
    opens.reattach(ds[3])
    assert opens.detached_of(("dev", 0)) == [ds[6]]
    opens.forget(ds[6].open)
    assert opens.detached_of(("dev", 0)) == []
    assert opens.detached_of(("dev", "none")) == []
    now[0] = 100.0
    assert opens.expire([]) == 6                               # 1, 2, 4, 5, 7, 8
    for d in ds[1:]:
        opens.forget(d.open)
    assert opens.held() == 0
