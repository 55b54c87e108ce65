"""Recommender models: MF and NCF for ratings, DLRM for click-through rates."""

from keras_mixed_dim.models.cross import LowRankCross
from keras_mixed_dim.models.cross import cross_network
from keras_mixed_dim.models.embeddings import EMBEDDING_KINDS
from keras_mixed_dim.models.embeddings import embedding_params
from keras_mixed_dim.models.embeddings import make_embedding
from keras_mixed_dim.models.id_safe import IdSafeModel
from keras_mixed_dim.models.id_safe import sanitize_id_array
from keras_mixed_dim.models.kinds import EmbeddingKind
from keras_mixed_dim.models.kinds import get_kind
from keras_mixed_dim.models.kinds import kind_names
from keras_mixed_dim.models.kinds import register_kind
from keras_mixed_dim.models.recommenders import matrix_factorization
from keras_mixed_dim.models.recommenders import neural_cf
from keras_mixed_dim.models.row_reads import read_embedding_rows

__all__ = [
    "EMBEDDING_KINDS",
    "EmbeddingKind",
    "IdSafeModel",
    "LowRankCross",
    "cross_network",
    "embedding_params",
    "get_kind",
    "kind_names",
    "make_embedding",
    "matrix_factorization",
    "neural_cf",
    "read_embedding_rows",
    "register_kind",
    "sanitize_id_array",
]
