"""MyDB with its user store on S3 (a real SeaweedFS): save, upload, read, SQL (the Parquet read lazily through
fsspec), replace and drop leave exactly the current versions' objects behind."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from labservice.datasets.mydb import MyDB
from labservice.users import UserStore


def test_mydb_tables_on_s3(s3_server, s3_url: str, tmp_path: Path) -> None:
    db = tmp_path / "platform.sqlite"
    alice = UserStore(db).create("alice")
    mydb = MyDB(db, s3_url, s3_server.storage_options)
    frame = pd.DataFrame({"x": [0.5, 1.5, 2.5], "label": ["a", "b", "c"]})
    assert mydb.save(alice.id, "sensors", frame)["rows"] == 3
    pd.testing.assert_frame_equal(mydb.read(alice.id, "mydb.sensors"), frame)
    got = mydb.sql(alice.id, "SELECT label FROM mydb.sensors WHERE x > 1 ORDER BY x").frame
    assert list(got.label) == ["b", "c"]
    mydb.upload(alice.id, "sensors", b"x,label\n9.5,z\n")  # replaced: the old object is removed
    assert mydb.sql(alice.id, "SELECT x FROM alice.sensors").frame.x.tolist() == [9.5]
    assert len(mydb.store.keys(alice.id)) == 1
    mydb.drop(alice.id, "sensors")
    assert mydb.store.keys(alice.id) == [] and mydb.tables(alice.id) == []
