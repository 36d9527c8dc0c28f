"""Worker events in words, for the panel's progress label and log (Slicer-translated strings)."""

from slicer.i18n import tr as _


def describeProgress(event):
    stage = event.get("stage")
    if stage == "train":
        eta = event.get("eta_s")
        etaText = "" if eta is None else _(", about {m}:{s:02d} left").format(m=int(eta) // 60, s=int(eta) % 60)
        return _("Epoch {e}/{E}, step {s}/{t}, loss {loss:.4f}{eta}").format(
            e=event.get("epoch"), E=event.get("epochs"), s=event.get("step"), t=event.get("total"),
            loss=event.get("loss") or float("nan"), eta=etaText,
        )  # fmt: skip
    if stage == "cache":
        return _("Computing image embeddings: {s}/{t} slices").format(s=event.get("step"), t=event.get("total"))
    return _("Segmenting: {s}/{t} slices").format(s=event.get("step"), t=event.get("total"))


def describeMetrics(event):
    parts = [f"epoch {event.get('epoch')}", f"loss {event.get('loss')}"]
    for key in ("val_dice", "d2_dice"):
        if event.get(key) is not None:
            parts.append(f"{key} {event[key]:.3f}")
    return ", ".join(parts)


def describeEvent(event):
    kind = event["event"]
    if kind == "checkpoint":
        return _("Checkpoint saved (epoch {e}, {reason}).").format(e=event.get("epoch"), reason=event.get("reason"))
    if kind == "started":
        return _("Started ({kind}).").format(kind=event.get("kind"))
    return str(event.get("message", ""))
