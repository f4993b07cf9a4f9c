"""Functions of the lmms-eval task ``video_qa_synthetic`` (copied next to its YAML by ``write_task``)."""

from llava_next_video_hf.testing.tasks import parse_answer


def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"accuracy": float(parse_answer(results[0]) == doc["answer"])}
