"""Judge input formats of released judges: `format=prometheus` (rubric and pairwise), `format=mtbench` (pairwise).

Prometheus 2's absolute and relative grading formats are what its weights were trained on, so their
strings are reproduced exactly (prometheus-eval/prometheus-eval @ dcfb442, libs/prometheus-eval/
prometheus_eval/prompts.py: ABS_SYSTEM_PROMPT, ABSOLUTE_PROMPT(_WO_REF), SCORE_RUBRIC_TEMPLATE,
REL_SYSTEM_PROMPT, RELATIVE_PROMPT(_WO_REF)); they are filled with `str.format`, as there. MT-Bench's pairwise judge (lm-sys/FastChat llm_judge, pair-v2) is a prompt
to GPT-4, not a trained format: its layout markers and the verdict format ("[[A]]", "[[B]]", "[[C]]"
after the explanation) carry over, its prose is our own (pass your own file with `system_template`
to use another wording).
"""

from __future__ import annotations

PROMETHEUS_SYSTEM = (
    "You are a fair judge assistant tasked with providing clear, objective feedback based on specific criteria, "
    "ensuring each assessment reflects the absolute standards set for performance."
)
_TASK = (
    "1. Write a detailed feedback that assess the quality of the response strictly based on the given score rubric, "
    "not evaluating in general.\n"
    "2. After writing a feedback, write a score that is an integer between 1 and 5. You should refer to the score "
    "rubric.\n"
    '3. The output format should look as follows: "(write a feedback for criteria) [RESULT] (an integer number '
    'between 1 and 5)"\n'
    "4. Please do not generate any other opening, closing, and explanations.\n\n"
    "###The instruction to evaluate:\n{instruction}\n\n###Response to evaluate:\n{response}\n\n"
)
PROMETHEUS_ABSOLUTE = (
    "###Task Description:\nAn instruction (might include an Input inside it), a response to evaluate, a reference "
    "answer that gets a score of 5, and a score rubric representing a evaluation criteria are given.\n"
    + _TASK
    + "###Reference Answer (Score 5):\n{reference_answer}\n\n###Score Rubrics:\n{rubric}\n\n###Feedback: "
)
PROMETHEUS_ABSOLUTE_WO_REF = (
    "###Task Description:\nAn instruction (might include an Input inside it), a response to evaluate, and a score "
    "rubric representing a evaluation criteria are given.\n"
    + _TASK
    + "###Score Rubrics:\n{rubric}\n\n###Feedback: "
)
PROMETHEUS_RUBRIC = (
    "[{criteria}]\nScore 1: {score1_description}\nScore 2: {score2_description}\nScore 3: {score3_description}\n"
    "Score 4: {score4_description}\nScore 5: {score5_description}"
)


def prometheus_prompt(instruction: str, response: str, criteria: str, descriptions: list[str], reference: str = "") -> str:
    """The Prometheus 2 absolute-grading user turn (with the reference answer when there is one)."""
    if len(descriptions) != 5:
        raise ValueError(f"format=prometheus grades on 1-5: it needs 5 score descriptions, not {len(descriptions)}")
    rubric = PROMETHEUS_RUBRIC.format(
        criteria=criteria, **{f"score{i + 1}_description": d for i, d in enumerate(descriptions)}
    )
    if reference:
        return PROMETHEUS_ABSOLUTE.format(
            instruction=instruction, response=response, reference_answer=reference, rubric=rubric
        )
    return PROMETHEUS_ABSOLUTE_WO_REF.format(instruction=instruction, response=response, rubric=rubric)


PROMETHEUS_REL_SYSTEM = (
    "You are a fair judge assistant assigned to deliver insightful feedback that compares individual performances, "
    "highlighting how each stands relative to others within the same cohort."
)
_REL_TASK = (
    "1. Write a detailed feedback that assess the quality of the two responses strictly based on the given "
    "evaluation criteria, not evaluating in general.\n"
    "2. Make comparisons between Response A, Response B, and the Reference Answer. Instead of examining Response A "
    "and Response B separately, go straight to the point and mention about the commonalities and differences "
    "between them.\n"
    '3. After writing the feedback, indicate the better response, either "A" or "B".\n'
    '4. The output format should look as follows: "Feedback: (write a feedback for criteria) [RESULT] (Either "A" '
    'or "B")"\n'
    "5. Please do not generate any other opening, closing, and explanations.\n\n"
    "###Instruction:\n{instruction}\n\n###Response A:\n{response_A}\n\n###Response B:\n{response_B}\n\n"
)
_REL_HEAD = (
    "###Task Description:\nAn instruction (might include an Input inside it), two responses to evaluate (denoted as "
    "Response A and Response B), "
)
PROMETHEUS_RELATIVE = (
    _REL_HEAD + "a reference answer, and an evaluation criteria are given.\n" + _REL_TASK
    + "###Reference Answer:\n{reference_answer}\n\n###Score Rubric:\n{rubric}\n\n###Feedback: "
)
PROMETHEUS_RELATIVE_WO_REF = (
    _REL_HEAD + "and an evaluation criteria are given.\n" + _REL_TASK + "###Score Rubric:\n{rubric}\n\n###Feedback: "
)


def prometheus_relative_prompt(instruction: str, response_a: str, response_b: str, rubric: str, reference: str = "") -> str:
    """The Prometheus 2 relative-grading user turn (with the reference answer when there is one)."""
    fields = {"instruction": instruction, "response_A": response_a, "response_B": response_b, "rubric": rubric}
    if reference:
        return PROMETHEUS_RELATIVE.format(reference_answer=reference, **fields)
    return PROMETHEUS_RELATIVE_WO_REF.format(**fields)


MTBENCH_SYSTEM = (
    "You are an impartial judge. Below are a user's question and the answers of two AI assistants. Decide which "
    "assistant follows the user's instructions and answers the question better, weighing helpfulness, "
    "relevance, accuracy, depth, creativity and level of detail. First compare the two answers and explain your "
    "reasoning briefly. The order in which the answers appear, their length and the assistants' names must not "
    "sway you; be as objective as you can. After the explanation, give your final verdict in exactly this "
    'format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, "[[C]]" for a tie.'
)


def mtbench_prompt(
    question: str, answer_a: str, answer_b: str, criteria: str | None = None, reference: str = ""
) -> str:
    """The MT-Bench pairwise user turn: its layout markers around the question, the reference answer when
    there is one (pair-math-v1) and the two answers."""
    head = f"[Criterion]\n{criteria}\n\n" if criteria else ""
    ref = f"[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n\n" if reference else ""
    return (
        f"{head}[User Question]\n{question}\n\n{ref}"
        f"[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
        f"[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
    )
