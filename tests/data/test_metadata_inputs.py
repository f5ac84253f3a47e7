"""Per-image metadata as a model input: the encoding fitted on the training split, its
``member.json`` record, the CSV ``zoo predict --metadata`` reads, and the recipe option.

(tests/data/test_metadata.py is about reading the metadata columns of the data sets.)
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest

from zoo.data.metadata import (
    MAX_SITES,
    MetadataEncoding,
    age_years,
    check_fields,
    read_metadata_csv,
    rows_for,
    sex_values,
)
from zoo.errors import ZooError
from zoo.recipes.recipe import Recipe, get_recipe, parse_recipe
from zoo.store.hashes import predictions_digest

ALL = ["age", "sex", "site"]
TRAIN = pd.DataFrame(
    {
        "age": ["40", "", "85.0", "abc"],
        "sex": ["male", "F", "unknown", ""],
        "site": ["Back", " face ", "unknown", "back"],
    }
)


def encoding() -> MetadataEncoding:
    return MetadataEncoding.fit(ALL, TRAIN)


# --- the encoding ---------------------------------------------------------------------------


def test_fit_keeps_the_training_sites_in_the_fixed_field_order():
    enc = MetadataEncoding.fit(["site", "age", "sex"], TRAIN)  # any order: encoded in FIELDS'
    assert enc == encoding()
    assert enc.fields == ("age", "sex", "site") and enc.sites == ("back", "face")
    assert enc.width == 2 + 2 + 2
    assert enc.column_names() == [
        "age/100",
        "age missing",
        "sex=female",
        "sex=male",
        "site=back",
        "site=face",
    ]
    assert MetadataEncoding.fit(["age", "sex"], TRAIN).sites == ()  # sites only when read
    assert MetadataEncoding.fit(["sex"], TRAIN).width == 2


def test_missing_unknown_and_unseen_values_set_no_column():
    frame = pd.DataFrame(
        {
            "age": ["40", "", "130", "abc", "-1", 85.0, None],
            "sex": ["M", "female", "unknown", None, "other", "f", "n/a"],
            "site": ["BACK", "face", "unknown", "ear", "", None, "?"],
        }
    )
    got = encoding().encode(frame)
    assert got.dtype == np.float32 and got.shape == (7, 6)
    np.testing.assert_array_equal(
        got,
        np.array(
            [
                [0.40, 0, 0, 1, 1, 0],  # 40, male, back
                [0.00, 1, 1, 0, 0, 1],  # age missing, female, face
                [0.00, 1, 0, 0, 0, 0],  # age over 120 reads missing; unknown; unknown
                [0.00, 1, 0, 0, 0, 0],  # not a number; missing; ear (unseen) sets no column
                [0.00, 1, 0, 0, 0, 0],  # negative age; "other" is not a sex; empty site
                [0.85, 0, 1, 0, 0, 0],  # a float age, f
                [0.00, 1, 0, 0, 0, 0],  # None everywhere
            ],
            np.float32,
        ),
    )
    assert encoding().unknown_sites(frame) == ["ear"]
    assert encoding().unknown_sites(frame.drop(columns="site")) == []
    assert MetadataEncoding.fit(["age"], TRAIN).unknown_sites(frame) == []  # site not read


def test_a_column_the_table_lacks_reads_as_missing():
    """A CSV of ages only, or no columns at all, still gives every image a row."""
    only_age = encoding().encode(pd.DataFrame({"age": ["60"]}, index=["x"]))
    np.testing.assert_array_equal(only_age, np.float32([[0.6, 0, 0, 0, 0, 0]]))
    nothing = encoding().encode(pd.DataFrame(index=["a", "b"]))
    np.testing.assert_array_equal(nothing, [[0, 1, 0, 0, 0, 0]] * 2)
    # the row order is the table's, whatever its index
    shuffled = pd.DataFrame({"age": ["10", "20"]}, index=[7, 3])
    assert encoding().encode(shuffled)[:, 0].tolist() == pytest.approx([0.1, 0.2])


def test_reading_rules_shared_with_subgroups():
    ages = age_years(pd.Series(["0", "120", "120.5", "-3", "x", "", None, 33]))
    assert ages.tolist()[:2] == [0, 120] and ages.iloc[2:7].isna().all() and ages.iloc[7] == 33
    sexes = sex_values(pd.Series([" M", "f", "Female", "NULL", None]))
    assert sexes.tolist() == ["male", "female", "female", "unknown", "unknown"]


@pytest.mark.parametrize("fields", ["age", ["age", "age"], ["height"], [1], None, {"age": 1}])
def test_check_fields_is_one_line_naming_the_option(fields):
    with pytest.raises(ZooError, match=r"^metadata: expected a list of distinct names") as info:
        check_fields(fields, "metadata")
    assert "\n" not in str(info.value)


def test_predictions_digest_depends_on_the_encoded_metadata():
    sha = "a" * 64
    assert predictions_digest(sha) == sha  # an image-only member: the model's hash as before
    rows = encoding().encode(TRAIN)
    digest = predictions_digest(sha, rows)
    assert digest != sha and len(digest) == 64
    assert predictions_digest(sha, rows.astype(np.float64)) == digest
    changed = rows.copy()
    changed[0, 0] += 0.01
    assert predictions_digest(sha, changed) != digest
    assert predictions_digest("b" * 64, rows) != digest
    assert predictions_digest(sha, rows[:2]) != predictions_digest(sha, rows[:2].reshape(3, 4))


# --- member.json's metadata_inputs ---------------------------------------------------------


def test_to_dict_from_dict_round_trip():
    record = encoding().to_dict()
    assert record == {"fields": ALL, "sites": ["back", "face"], "width": 6}
    assert MetadataEncoding.from_dict(record) == encoding()
    age_only = MetadataEncoding.fit(["age"], TRAIN)
    assert MetadataEncoding.from_dict(age_only.to_dict()) == age_only


GOOD = {"fields": ["age", "sex", "site"], "sites": ["back", "face"], "width": 6}


def _changed(**change) -> dict:
    record = {**GOOD, **change}
    return {k: v for k, v in record.items() if v is not DROP}


DROP = object()


@pytest.mark.parametrize(
    ("record", "named"),
    [
        (None, "'metadata_inputs' must be an object"),
        ([], "'metadata_inputs' must be an object"),
        ("age", "'metadata_inputs' must be an object"),
        (_changed(fields=DROP), "metadata_inputs.fields"),
        (_changed(fields="age"), "metadata_inputs.fields"),
        (_changed(fields=["age", "height"]), "metadata_inputs.fields"),
        (_changed(fields=["age", "age"]), "metadata_inputs.fields"),
        (_changed(fields=[1]), "metadata_inputs.fields"),
        (_changed(fields=[], sites=[], width=0), "metadata_inputs.fields"),
        (_changed(fields=["site"], sites=[], width=0), "metadata_inputs.fields"),
        (_changed(sites="back"), "metadata_inputs.sites"),
        (_changed(sites=["Back", "face"]), "metadata_inputs.sites"),
        (_changed(sites=[" back", "face"]), "metadata_inputs.sites"),
        (_changed(sites=["back", "back"]), "metadata_inputs.sites"),
        (_changed(sites=["back", ""]), "metadata_inputs.sites"),
        (_changed(sites=["back", 1]), "metadata_inputs.sites"),
        (_changed(sites=None), "metadata_inputs.sites"),
        (_changed(sites=[f"s{i}" for i in range(MAX_SITES + 1)]), "metadata_inputs.sites"),
        (_changed(width=DROP), "metadata_inputs.width"),
        (_changed(width=7), "metadata_inputs.width"),
        (_changed(width="6"), "metadata_inputs.width"),
        (_changed(width=None), "metadata_inputs.width"),
        (_changed(sites=["back"]), "metadata_inputs.width"),  # a site dropped, width kept
    ],
)
def test_from_dict_rejects_each_malformed_field_naming_it(record, named):
    with pytest.raises(ValueError) as info:
        MetadataEncoding.from_dict(record)
    message = str(info.value)
    assert named in message and "\n" not in message and len(message) < 300


def test_from_dict_names_where_the_record_is():
    with pytest.raises(ValueError, match=r"member\.json:metadata_inputs\.width"):
        MetadataEncoding.from_dict(_changed(width=1), where="member.json:metadata_inputs")


# --- zoo predict --metadata FILE.csv ---------------------------------------------------------


def test_read_metadata_csv_reads_the_id_and_column_aliases(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_text(
        "isic_id,age_approx,sex,anatom_site_general,extra\n"
        "ISIC_1.jpg,40,male,back,x\n"
        "sub/ISIC_2.png,,,,y\n"
        " ISIC_3 ,NA,female,upper extremity,z\n"
    )
    frame = read_metadata_csv(path)
    assert frame.index.tolist() == ["ISIC_1", "sub/ISIC_2", "ISIC_3"]  # extensions removed
    assert list(frame.columns) == ALL  # the id and other columns are left out
    assert frame.loc["sub/ISIC_2"].tolist() == ["", "", ""]  # text kept; "NA" is not NaN yet
    assert frame.loc["ISIC_3", "age"] == "NA"
    np.testing.assert_array_equal(
        MetadataEncoding.fit(ALL, pd.DataFrame({"site": ["back"]})).encode(
            rows_for(frame, ["ISIC_1", "ISIC_2", "ISIC_3"])  # by name, else by file stem
        ),
        np.float32([[0.4, 0, 0, 1, 1], [0, 1, 0, 0, 0], [0, 1, 1, 0, 0]]),
    )
    # HAM10000's own names: image_id and localization
    ham = tmp_path / "ham.csv"
    ham.write_text("lesion_id,image_id,dx,age,sex,localization\nL1,ISIC_9,nv,50,female,face\n")
    assert read_metadata_csv(ham).loc["ISIC_9"].tolist() == ["50", "female", "face"]
    # only some columns: the others are absent (read as missing when encoded)
    ages = tmp_path / "ages.csv"
    ages.write_text("file,age\na.jpg,30\n")
    assert list(read_metadata_csv(ages).columns) == ["age"]


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("absent.csv", None, "no such file"),
        ("empty.csv", b"", "cannot be read as CSV"),
        ("binary.csv", b"\xff\xfe\x00\x01bad\x00\n", "cannot be read as CSV"),
        ("quote.csv", b'image,age\n"a,3\n', "cannot be read as CSV"),
        ("noid.csv", b"name,age\na,3\n", "no image id column (one of image, image_id"),
        ("header.csv", b"\n", "cannot be read as CSV"),
        ("twice.csv", b"image,age\na.jpg,3\na.png,4\n", "image 'a' has more than one row"),
        ("folder", "dir", "cannot be read as CSV"),
    ],
)
def test_read_metadata_csv_errors_are_one_line_naming_the_file(tmp_path, name, content, says):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ZooError) as info:
        read_metadata_csv(path)
    message = str(info.value)
    assert message.startswith(f"--metadata {path}: ") and says in message
    assert "\n" not in message


# --- the recipe option ------------------------------------------------------------------------

TINY = """\
name = "tiny"
source = "zoo tests"
backbone = "small_cnn"
weights = "none"
{metadata}

[input]
size = 32
preprocessing = "unit"

[[stages]]
name = "all"
epochs = 1
learning_rate = 0.003
"""


def test_recipes_read_no_metadata_by_default():
    recipe = get_recipe("small_cnn")
    assert recipe.model.metadata == ()
    # left out of the recipe's data when off, so recipes from before the option read the same
    assert "metadata" not in recipe.as_dict()
    assert Recipe.from_dict(recipe.as_dict()).model.metadata == ()


@pytest.mark.parametrize(
    ("setting", "fields"),
    [
        ("metadata=['age','sex','site']", ("age", "sex", "site")),
        ('metadata=["site"]', ("site",)),
        ("metadata=[]", ()),
    ],
)
def test_set_metadata(setting, fields):
    recipe = get_recipe("small_cnn").with_settings([setting])
    assert recipe.model.metadata == fields
    assert Recipe.from_dict(recipe.as_dict()).model.metadata == fields  # member.json round trip


@pytest.mark.parametrize(
    "value", ["age", "['age','age']", "['height']", "[1]", "['Age']", "true", "{age = 1}"]
)
def test_set_bad_metadata_is_one_line_naming_the_option(value):
    with pytest.raises(ZooError) as info:
        get_recipe("small_cnn").with_settings([f"metadata={value}"])
    message = str(info.value)
    assert message.startswith(f"--set metadata={value}: ") and "\n" not in message
    assert "metadata must be a list of distinct names out of age, sex, site" in message


def test_recipe_file_metadata(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(TINY.format(metadata='metadata = ["sex", "age"]')))
    assert parse_recipe(path).model.metadata == ("sex", "age")
    path.write_text(textwrap.dedent(TINY.format(metadata='metadata = ["age", "weight"]')))
    with pytest.raises(ZooError, match=r"metadata must be a list of distinct names") as info:
        parse_recipe(path)
    assert str(info.value).startswith(f"recipe file {path}: ") and "\n" not in str(info.value)


def test_rows_for_finds_a_row_by_name_else_by_its_one_file_stem(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_text(
        "image,age\na/ISIC_1.jpg,10\nb/ISIC_1.jpg,20\n/data/lesions/ISIC_2.JPG,30\nISIC_3,40\n"
    )
    table = read_metadata_csv(path)
    # zoo predict names clashing stems folder/stem, the others by stem
    names = ["a/ISIC_1", "b/ISIC_1", "ISIC_2", "ISIC_3", "ISIC_1", "ISIC_9"]
    rows = rows_for(table, names)
    assert rows.index.tolist() == names
    assert rows["age"].tolist()[:4] == ["10", "20", "30", "40"]
    assert rows["age"].iloc[4:].isna().all()  # ISIC_1 is two rows' stem: none chosen; ISIC_9 none
