"""Validates OME-Zarr groups against the published NGFF JSON schemas kept in
tests/data/ngff-schemas (no network: every $ref resolves to a local file).

usage: check_ngff.py GROUP...

A group with zarr.json is NGFF 0.5 (its attributes against
0.5/strict_image.schema; each level's dimension_names must equal the axis
names), one with .zattrs is NGFF 0.4 (against 0.4/strict_image.schema). A
group with "image-label" metadata is checked against strict_label.schema too,
and a "labels" group inside an image must list label groups that exist there,
each checked the same way.
Prints "OK n groups" or the errors, and exits 1 on any.
"""
import json
import os
import sys

import jsonschema

SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "ngff-schemas")


def store():
    """URI -> schema for every local schema file, under its $id and its versioned URL."""
    out = {}
    for version in ("0.4", "0.5"):
        folder = os.path.join(SCHEMAS, version)
        for name in os.listdir(folder):
            with open(os.path.join(folder, name)) as f:
                schema = json.load(f)
            out["https://ngff.openmicroscopy.org/%s/schemas/%s" % (version, name)] = schema
            if "$id" in schema:
                out.setdefault(schema["$id"], schema)
    return out


def validate(doc, version, uris, schema_name="strict_image.schema"):
    uri = "https://ngff.openmicroscopy.org/%s/schemas/%s" % (version, schema_name)
    schema = uris[uri]
    resolver = jsonschema.RefResolver(uri, schema, store=uris)
    validator = jsonschema.Draft202012Validator(schema, resolver=resolver)
    return ["%s: %s" % (list(e.absolute_path), e.message) for e in validator.iter_errors(doc)]


def attributes(group):
    """(version, attributes) of an NGFF group, or (None, None) if it is none."""
    if os.path.exists(os.path.join(group, "zarr.json")):
        with open(os.path.join(group, "zarr.json")) as f:
            return "0.5", json.load(f).get("attributes", {})
    if os.path.exists(os.path.join(group, ".zattrs")):
        with open(os.path.join(group, ".zattrs")) as f:
            return "0.4", json.load(f)
    return None, None


def check_labels(group, uris):
    """Errors of the label images an image group holds (none if it has no labels/)."""
    folder = os.path.join(group, "labels")
    if not os.path.isdir(folder):
        return []
    version, attrs = attributes(folder)
    if version is None:
        return ["labels/ is not a Zarr group"]
    listed = attrs.get("ome", attrs).get("labels") if version == "0.5" else attrs.get("labels")
    if not isinstance(listed, list) or not listed:
        return ["labels/ lists no labels"]
    errors = []
    for name in listed:
        label = os.path.join(folder, name)
        label_version, label_attrs = attributes(label)
        if label_version != version:
            errors.append("labels/%s: missing or not NGFF %s" % (name, version))
            continue
        found = validate(label_attrs, version, uris)
        found += validate(label_attrs, version, uris, "strict_label.schema")
        errors += ["labels/%s: %s" % (name, e) for e in found]
    return errors


def main():
    uris = store()
    errors = []
    for group in sys.argv[1:]:
        if os.path.exists(os.path.join(group, "zarr.json")):
            with open(os.path.join(group, "zarr.json")) as f:
                attrs = json.load(f).get("attributes", {})
            found = validate(attrs, "0.5", uris)
            for ms in attrs.get("ome", {}).get("multiscales", []):
                names = [a["name"] for a in ms["axes"]]
                for ds in ms["datasets"]:
                    with open(os.path.join(group, ds["path"], "zarr.json")) as f:
                        dims = json.load(f).get("dimension_names")
                    if dims != names:
                        found.append("level %s: dimension_names %s != axes %s" %
                                     (ds["path"], dims, names))
        else:
            with open(os.path.join(group, ".zattrs")) as f:
                found = validate(json.load(f), "0.4", uris)
        version, attrs = attributes(group)
        image_label = attrs.get("ome", {}) if version == "0.5" else attrs
        if "image-label" in image_label:
            found += validate(attrs, version, uris, "strict_label.schema")
        found += check_labels(group, uris)
        errors += ["%s: %s" % (group, e) for e in found]
    for e in errors:
        print(e)
    print("OK %d groups" % len(sys.argv[1:]) if not errors else "FAILED")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
