"""models.config for tensorflow_model_server --model_config_file: the text
proto TF Serving reads, listing the model folders that hold a version."""

import os

from keras_mixed_dim.export import write_models_config
from keras_mixed_dim.export.config import models_config_text
from keras_mixed_dim.export.versions import write_version
from tests.helpers import fake_saved_model as make


def test_models_config_is_valid_text_proto_and_readable(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    write_version(tmp_path, "b", make)
    write_version(tmp_path, 'we"ird', make)
    (tmp_path / "empty").mkdir()  # no version: not served
    old = os.umask(0o022)
    try:
        path = write_models_config(tmp_path, serving_base="/srv/models/")
    finally:
        os.umask(old)
    config = text_format.Parse(path.read_text(),
                               model_server_config_pb2.ModelServerConfig())
    entries_ = [(c.name, c.base_path, c.model_platform)
                for c in config.model_config_list.config]
    assert entries_ == [("b", "/srv/models/b", "tensorflow"),
                        ('we"ird', '/srv/models/we"ird', "tensorflow")]
    assert path.stat().st_mode & 0o777 == 0o644


def test_models_config_text_escapes_names_and_joins_the_base_path():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    text = models_config_text(["a", "b\\c\nd"], serving_base="/srv/")
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    assert [(c.name, c.base_path) for c in config.model_config_list.config] == [
        ("a", "/srv/a"), ("b\\c\nd", "/srv/b\\c\nd")]
