"""What ``medprompt-train`` does instead of training: ``--list-methods`` (:func:`describe_methods`),
``--list-versions`` and ``--rebuild-index`` of a model store (:func:`store_command`)."""

from __future__ import annotations

import sys


def describe_methods() -> str:
    """Every registered method: description, needs, training defaults and option schema."""
    from napari_medprompt.classify.base import available_methods

    from napari_medprompt.seg_adapters.registry import available_seg_methods

    lines = []
    for name, info in sorted({**available_methods(), **available_seg_methods()}.items()):
        needs = [w for w, f in (("masks", info.uses_masks), ("a CLIP text tower", info.needs_text)) if f]
        lines.append(f"{name}: {info.description}" + (f" (needs {' and '.join(needs)})" if needs else ""))
        d = getattr(info, "defaults", None)
        if d is not None:
            if d.epochs == 0:
                lines.append("  training-free (nothing is optimised)")
            else:
                lines.append(f"  defaults: optimizer {d.optimizer}, lr {d.lr:g}, epochs {d.epochs}, "
                             f"batch size {d.batch_size}, weight decay {d.weight_decay:g}"
                             + (f"  [{d.note}]" if getattr(d, "note", "") else ""))
        for o in getattr(info, "options", ()):
            lines.append(f"  --opt {o.describe()}")
    return "\n".join(lines)


def store_command(args) -> int:
    """``--list-versions`` / ``--rebuild-index`` of ``--store``: prints the versions (after rebuilding
    the index when asked); the exit status (2 without ``--store`` or when the store cannot be read)."""
    from napari_medprompt.train.store import ModelStore, StoreError

    if not args.store:
        print("medprompt-train: --list-versions / --rebuild-index need --store DIR", file=sys.stderr)
        return 2
    store = ModelStore(args.store)
    try:
        if args.rebuild_index:
            backup = store.rebuild_index()
            print(f"index of {store.root} rebuilt from {len(store.list())} version folder(s)"
                  + (f"; previous index kept as {backup}" if backup else ""))
            if store.active is None and store.list():
                print("no version is active (the previous activation could not be read); activate one")
        for v in store.list():
            ba = v.get("balanced_accuracy")
            print(f"{'*' if v['active'] else ' '} {v['id']}  {v['created_at']}  {v['method']} on {v['backbone']}"
                  f"{' (RANDOM weights)' if v['random_weights'] else ''}  parent={v['parent']}  {v['status']}"
                  + (f"  {v['selected_on']} balanced_accuracy={ba:.3f}" if ba is not None else ""))
    except StoreError as err:
        print(f"medprompt-train: {err}", file=sys.stderr)
        return 2
    return 0
