"""Class labels of objects and of the whole image: saved in the session file, undone, old files load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medprompt.session import AnnotationSession
from napari_medprompt.session.store import MANIFEST


def _session(folder=None):
    s = AnnotationSession((4, 16, 16), (1.0, 1.0, 1.0), image_key="k", folder=folder)
    s.new_object("a")
    s.new_object("b")
    m = np.zeros((16, 16), bool)
    m[4:8, 4:8] = True
    s.commit_slices(1, {1: m}, "prompted")
    return s


def test_object_and_image_classes_round_trip_through_the_session_file(tmp_path):
    s = _session(tmp_path / "s")
    s.set_object_class(1, " malignant ")
    s.set_image_class("pneumonia")
    assert s.objects[1].class_name == "malignant", "names are stripped"
    assert s.object_classes() == {1: "malignant"}
    on_disk = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert on_disk["image"]["class"] == "pneumonia"
    assert [o.get("class") for o in on_disk["objects"]] == ["malignant", None]
    back = AnnotationSession.load(tmp_path / "s")
    assert back.objects[1].class_name == "malignant" and back.objects[2].class_name is None
    assert back.image_class == "pneumonia"


def test_classes_are_undo_steps_and_emit_object_events(tmp_path):
    s = _session(tmp_path / "s")
    events = []
    s.on_change(events.append)
    s.set_object_class(2, "benign")
    s.set_image_class("normal")
    assert [e.kind for e in events if e.kind != "saved"] == ["objects", "objects"]
    assert s.undo() and s.image_class is None and s.objects[2].class_name == "benign"
    assert s.undo() and s.objects[2].class_name is None
    assert s.redo() and s.objects[2].class_name == "benign"
    assert s.redo() and s.image_class == "normal"
    s.set_object_class(2, None)
    assert s.object_classes() == {}
    assert AnnotationSession.load(tmp_path / "s").objects[2].class_name is None, "undo/redo/clear are saved"


def test_a_session_file_without_classes_loads(tmp_path):
    s = _session(tmp_path / "s")
    s.save()
    path = tmp_path / "s" / MANIFEST
    man = json.loads(path.read_text())
    assert "class" not in man["image"] and all("class" not in o for o in man["objects"]), "nothing written when unset"
    back = AnnotationSession.load(tmp_path / "s")
    assert back.image_class is None and all(o.class_name is None for o in back.objects.values())


def test_bad_class_names_are_refused():
    s = _session()
    with pytest.raises(ValueError, match="text"):
        s.set_object_class(1, 3)
    with pytest.raises(KeyError, match="no object with label id 9"):
        s.set_object_class(9, "x")
    s.set_object_class(1, "   ")
    assert s.objects[1].class_name is None, "a blank name means no class"


def test_review_rows_carry_the_class():
    from napari_medprompt.session.review import object_rows

    s = _session()
    s.set_object_class(2, "benign")
    assert [(r.id, r.class_name) for r in object_rows(s)] == [(1, None), (2, "benign")]
