"""HashingEmbedding on the current backend, against numpy references
built from its weights (the contract the compressed lookups share)."""

import pytest

from tests.layers import compressed_contract as contract


# The shared contract, over this layer's kinds.
test_outputs_match_numpy_reference = contract.test_outputs_match_numpy_reference
test_bad_ids_give_zeros_and_strings_are_rejected = (
    contract.test_bad_ids_give_zeros_and_strings_are_rejected)
test_combiner_skips_padding_and_bad_ids = contract.test_combiner_skips_padding_and_bad_ids
test_mask_zero_gives_a_mask = contract.test_mask_zero_gives_a_mask
test_mixed_precision_keeps_weights_in_float32 = (
    contract.test_mixed_precision_keeps_weights_in_float32)
test_config_and_keras_file_round_trip = contract.test_config_and_keras_file_round_trip
test_gradients_reach_only_the_looked_up_entries = (
    contract.test_gradients_reach_only_the_looked_up_entries)


@pytest.fixture(params=["hashing_mod", "hashing_universal"])
def kind(request):
    return request.param
