"""The parameter form of every deployment: each knob of each registered stage with its help text as
description, its default, and its type validated (by the schema the UI uses, and by Prefect)."""
import dataclasses

import jsonschema
import pytest
from prefect.exceptions import ParameterTypeError

from flows import pipeline_flow as pf
from flows.deployments import deployments
from flows.forms import parameter_name
from pipeline.knobs import help_of
from pipeline.stages import STAGE_MODULES, get_stage


def _schema(deployment) -> dict:
    return deployment._parameter_openapi_schema.model_dump_for_openapi()


def _knob_properties(schema: dict, stage_name: str) -> dict:
    ref = schema["properties"][parameter_name(stage_name)]["$ref"].rsplit("/", 1)[-1]
    return schema["definitions"][ref]["properties"]


def _default(field):
    value = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    return list(value) if isinstance(value, tuple) else value


@pytest.fixture(scope="module")
def all_deployments():
    return {f"{d.flow_name}/{d.name}": d for d in deployments()}


def test_every_knob_of_every_registered_stage_has_its_help_and_default(all_deployments):
    whole = _schema(all_deployments["scratchlm-pipeline/whole-pipeline"])
    for name in STAGE_MODULES:
        stage = get_stage(name)
        single = _schema(all_deployments[f"stage-{name}/{name}"])
        # Stages outside the DAG's flows (the align stages sft, classify, dpo) have their own flow only.
        for schema in (whole, single) if name in pf.PIPELINE else (single,):
            props = _knob_properties(schema, name)
            assert set(props) == {f.name for f in dataclasses.fields(stage.config_cls)}
            for field in dataclasses.fields(stage.config_cls):
                prop = props[field.name]
                assert prop["description"].startswith(help_of(field)), (name, field.name)
                assert help_of(field), f"{name}.{field.name} has no help text"
                assert prop["default"] == _default(field), (name, field.name)
                assert ("not in the artifact key" in prop["description"]) == (not field.metadata.get("in_key", True))


def test_sub_flows_carry_exactly_their_stages(all_deployments):
    for flow_and_name, part in (("scratchlm-data/crawl-to-corpus", "data"), ("scratchlm-tokens/corpus-to-tokens", "tokens"),
                                ("scratchlm-model/tokens-to-model", "model")):
        props = _schema(all_deployments[flow_and_name])["properties"]
        stage_params = {p for p in props if p.replace("_", "-") in pf.PIPELINE}
        assert stage_params == {parameter_name(n) for n in pf.registered(pf.SUBFLOWS[part])}


def test_types_are_validated_by_the_form_schema_and_by_prefect(all_deployments):
    schema = _schema(all_deployments["scratchlm-data/crawl-to-corpus"])
    good = {"crawl": ["x.warc.gz"], "quality": {"gopher_min_words": 30}, "dedup": {"threshold": 0.7}}
    jsonschema.validate(good, schema)
    for bad in ({"quality": {"gopher_min_words": "many"}}, {"dedup": {"threshold": "high"}},
                {"ingest": {"only_ok_status": "perhaps"}}, {"workers": 1.5}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    validated = pf.data_pipeline.validate_parameters({"quality": {"gopher_min_words": "30"}})
    assert validated["quality"].gopher_min_words == 30
    assert type(validated["quality"]).__name__ == type(get_stage("quality").config_cls()).__name__
    with pytest.raises(ParameterTypeError, match="gopher_min_words"):
        pf.data_pipeline.validate_parameters({"quality": {"gopher_min_words": "many"}})


def test_choices_become_an_enum_and_are_enforced():
    from flows.forms import knob_parameter
    from pipeline.knobs import knob
    from prefect import flow

    @dataclasses.dataclass
    class Toy:
        mode: str = knob("fast", "How to run.", choices=("fast", "exact"))

    def toy(config: knob_parameter(Toy) = Toy()):
        return config.mode

    toy_flow = flow(toy, name="toy")
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(toy_flow).model_dump_for_openapi()
    assert schema["definitions"]["Toy"]["properties"]["mode"]["enum"] == ["fast", "exact"]
    assert toy_flow.validate_parameters({"config": {"mode": "exact"}})["config"].mode == "exact"
    with pytest.raises(ParameterTypeError, match="must be one of fast, exact"):
        toy_flow.validate_parameters({"config": {"mode": "slow"}})


RUN_PARAMETERS = ("crawl", "corpus", "tokens", "inputs", "against", "tokenizer", "store", "until", "workers", "runner",
                  "dask_address", "held_out", "seeds")


def test_run_parameters_have_help_and_until_and_runner_are_choices(all_deployments):
    seen = set()
    for name, deployment in all_deployments.items():
        props = _schema(deployment)["properties"]
        for param in RUN_PARAMETERS:
            if param in props:
                seen.add(param)
                assert len(props[param].get("description", "")) > 20, (name, param)
        if "runner" in props:
            assert props["runner"]["enum"] == list(pf.RUNNERS), name
        if "until" in props:
            assert props["until"]["enum"], name
            assert props["until"]["default"] in props["until"]["enum"], name
            assert set(props["until"]["enum"]) <= set(pf.PIPELINE), name
    assert seen == set(RUN_PARAMETERS)
    whole = _schema(all_deployments["scratchlm-pipeline/whole-pipeline"])["properties"]
    assert whole["until"]["enum"] == list(pf.PIPELINE)
    data = _schema(all_deployments["scratchlm-data/crawl-to-corpus"])["properties"]
    assert data["until"]["enum"] == list(pf.SUBFLOWS["data"])
    tokens = _schema(all_deployments["scratchlm-tokens/corpus-to-tokens"])["properties"]
    assert tokens["until"]["enum"] == list(pf.SUBFLOWS["tokens"])
    model = _schema(all_deployments["scratchlm-model/tokens-to-model"])["properties"]
    assert model["until"]["enum"] == list(pf.SUBFLOWS["model"])


def test_a_value_outside_the_choices_is_refused_by_the_form_and_by_prefect(all_deployments):
    schema = _schema(all_deployments["scratchlm-data/crawl-to-corpus"])
    jsonschema.validate({"until": "quality", "runner": "dask"}, schema)
    for bad in ({"until": "qualiti"}, {"until": "tokenize"}, {"runner": "slurm"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    assert pf.data_pipeline.validate_parameters({"until": "langid", "runner": "local"})["until"] == "langid"
    with pytest.raises(ParameterTypeError, match="until"):
        pf.data_pipeline.validate_parameters({"until": "qualiti"})
    with pytest.raises(ParameterTypeError, match="runner"):
        pf.scratchlm_pipeline.validate_parameters({"runner": "slurm"})
