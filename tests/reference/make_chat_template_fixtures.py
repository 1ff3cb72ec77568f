#!/usr/bin/env python3
"""Renders chat templates with transformers' own Jinja renderer and records what ranktune must reproduce
(tests/data/test_jinja.cpp, tests/data/test_chat_template.cpp).

The templates below are written after the published chat templates of their model families (the tokenizer_config.json
`chat_template` of Llama-3-Instruct, Llama-3.1-Instruct, Llama-2-chat, Mistral-Instruct v0.1 and v0.3, Qwen2 and
Qwen2.5-Instruct, Zephyr / TinyLlama-Chat, ChatML models, Gemma and Gemma-3); nothing is downloaded. features.json holds
small templates that exercise one part of the Jinja subset each (whitespace control, filters, tests, operators, ...).

Writes tests/reference/fixtures/chat_templates/:
  <family>.json     the template, the special tokens transformers passes it, the tokenizer fixture it is paired with,
                    `renders` (conversation, add_generation_prompt -> transformers' rendering or its error) and
                    `encodings` (conversation -> rendered text, the assistant turns found by the prefix method as UTF-8
                    byte spans, the ids of apply_chat_template(tokenize=True) and the loss mask: a token is trained
                    when it overlaps an assistant turn, HF's rule for return_assistant_tokens_mask) or `refused`
  gemma.tokenizer.json   the llama2 tokenizer fixture plus Gemma's special tokens
  features.json     {template, variables} -> rendering, or the error transformers raises
Usage: python3 tests/reference/make_chat_template_fixtures.py (transformers 5.x, tokenizers, jinja2 >= 3.1.6)
"""
import json
import pathlib

import transformers
from tokenizers import AddedToken, Tokenizer
from transformers import PreTrainedTokenizerFast
from transformers.utils.chat_template_utils import render_jinja_template

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
OUT = FIXTURES / "chat_templates"

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")

LLAMA3_1 = r'''{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
'''

LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")

MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")

# v0.3 puts the system prompt into the last user message only, so a conversation that ends with a reply loses it and
# a prompt is no prefix of the conversation with its reply: ranktune refuses that by name.
MISTRAL_V3 = r'''{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
'''

QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

QWEN2_5 = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
'''

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

# Zephyr / TinyLlama-1.1B-Chat: one tag per line, so trim_blocks decides every newline.
ZEPHYR = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>\\n' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>\\n' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""

GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")

GEMMA3 = r'''{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
'''

LLAMA3_SPECIALS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
SP_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
QWEN_SPECIALS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
GEMMA_SPECIALS = {"bos_token": "<bos>", "eos_token": "<eos>"}

# name -> (template, special tokens, tokenizer fixture relative to tests/reference/fixtures)
FAMILIES = {
    "llama3": (LLAMA3, LLAMA3_SPECIALS, "tokenizers/llama3.tokenizer.json"),
    "llama3_1": (LLAMA3_1, LLAMA3_SPECIALS, "tokenizers/llama3.tokenizer.json"),
    "llama2": (LLAMA2, SP_SPECIALS, "tokenizers/llama2.tokenizer.json"),
    "mistral": (MISTRAL, SP_SPECIALS, "tokenizers/mistral.tokenizer.json"),
    "mistral_v3": (MISTRAL_V3, SP_SPECIALS, "tokenizers/mistral.tokenizer.json"),
    "qwen2": (QWEN2, QWEN_SPECIALS, "tokenizers/qwen2.tokenizer.json"),
    "qwen2_5": (QWEN2_5, QWEN_SPECIALS, "tokenizers/qwen2.tokenizer.json"),
    "chatml": (CHATML, QWEN_SPECIALS, "tokenizers/qwen2.tokenizer.json"),
    "zephyr": (ZEPHYR, SP_SPECIALS, "tokenizers/llama2.tokenizer.json"),
    "gemma": (GEMMA, GEMMA_SPECIALS, "chat_templates/gemma.tokenizer.json"),
    "gemma3": (GEMMA3, GEMMA_SPECIALS, "chat_templates/gemma.tokenizer.json"),
}


def u(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = [
    [u("user", "Hello!"), u("assistant", "Hi! How can I help?")],
    [u("system", "You are a terse assistant."), u("user", "What is 2+2?"), u("assistant", "4")],
    [u("system", "Answer in French."), u("user", "Good morning"), u("assistant", "Bonjour"),
     u("user", "And good night?"), u("assistant", "Bonne nuit")],
    [u("user", "one"), u("assistant", "1"), u("user", "two"), u("assistant", "2"), u("user", "three"),
     u("assistant", "3")],
    [u("user", "Grüße aus Köln 🚀 — 你好世界, naïve café"), u("assistant", "  Привет, мир! ✨ 👩‍💻\n")],
    [u("user", "Say nothing."), u("assistant", "")],
    [u("user", ""), u("assistant", "ok")],
    [u("user", "line one\n\nline two\n"), u("assistant", "```python\nprint('hi')\n```")],
    [u("user", "What ends a turn?"), u("assistant", "The token <|im_end|> or </s>, written as text.")],
    [u("user", "Tell me a joke."), u("assistant", "Why did the GPU cross the bus?"), u("user", "Why?")],
    [u("user", "first"), u("user", "second"), u("assistant", "both")],
]

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"}},
                   "required": ["city"]}}}]


def render(template, messages, add_generation_prompt, variables):
    try:
        rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                            add_generation_prompt=add_generation_prompt, **variables)
        return {"rendered": rendered[0]}
    except Exception as e:  # the template's raise_exception, or jinja2's own error
        return {"error": str(e)}


def byte_offset(text, char_index):
    return len(text[:char_index].encode("utf-8"))


def turns_by_prefix(template, messages, variables):
    """The assistant turns of the full rendering: render(messages[:i], add_generation_prompt=True) must be a prefix of
    render(messages[:i+1]), which must be a prefix of the whole; the text between the two is turn i."""
    full = render(template, messages, False, variables)["rendered"]
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(template, messages[:i], True, variables)
        upto = render(template, messages[: i + 1], False, variables)
        if "error" in prompt or "error" in upto:
            return full, None, "rendering part of the conversation failed"
        if not upto["rendered"].startswith(prompt["rendered"]):
            return full, None, f"the prompt of message {i} is not a prefix of its reply's rendering"
        if not full.startswith(upto["rendered"]):
            return full, None, f"message {i} renders differently when later messages follow"
        spans.append((len(prompt["rendered"]), len(upto["rendered"])))
    return full, spans, None


def family_fixture(name, template, specials, tokenizer_file):
    tok = PreTrainedTokenizerFast(tokenizer_file=str(FIXTURES / tokenizer_file), **specials)
    out = {"name": name, "template": template, "special_tokens": specials, "tokenizer": tokenizer_file,
           "renders": [], "encodings": []}
    for msgs in CONVERSATIONS:
        for gen in (False, True):
            out["renders"].append({"messages": msgs, "add_generation_prompt": gen,
                                   **render(template, msgs, gen, specials)})
    if name in ("llama3_1", "qwen2_5", "mistral_v3"):
        variables = {**specials, "tools": TOOLS}
        for gen in (False, True):
            out["renders"].append({"messages": CONVERSATIONS[1], "add_generation_prompt": gen,
                                   "variables": {"tools": TOOLS}, **render(template, CONVERSATIONS[1], gen, variables)})
    for msgs in CONVERSATIONS:
        if msgs[-1]["role"] != "assistant" or "error" in render(template, msgs, False, specials):
            continue
        full, spans, refused = turns_by_prefix(template, msgs, specials)
        if refused:
            out["encodings"].append({"messages": msgs, "refused": refused})
            continue
        ids = tok.apply_chat_template(msgs, chat_template=template, tokenize=True, return_dict=False)
        enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
        assert ids == enc["input_ids"], name
        mask = [int(any(e > a and s < b for a, b in spans)) for s, e in enc["offset_mapping"]]
        out["encodings"].append({
            "messages": msgs, "rendered": full, "turns": [full[a:b] for a, b in spans],
            "spans": [[byte_offset(full, a), byte_offset(full, b)] for a, b in spans], "ids": ids, "mask": mask})
    return out


# (template, variables): each probes one part of the subset; variables are JSON values.
MSGS = [u("system", "sys"), u("user", "Hi there"), u("assistant", " Hello! "), u("user", "Bye")]
FEATURES = [
    # whitespace control: trim_blocks, lstrip_blocks, "-" and "+" markers, comments, the final newline
    ("  {% if true %}\n  x\n  {% endif %}\n  y", {}),
    ("a  {%- if true -%}  b  {%- endif -%}  c", {}),
    ("{{ 'x' }}\n{% if true %}\n{{ 'y' }}\n{% endif %}\n", {}),
    ("line\n  {# comment #}\n  z\n   {#- trimmed -#}   w", {}),
    ("  {%+ if true %}x{% endif +%}\nkept", {}),
    ("{% for m in messages %}\n    {{ m.role }}:\n    {%- if m.content %} {{ m.content }}{% endif %}\n{% endfor %}\n\n",
     {"messages": MSGS}),
    ("a\r\nb\r{{ 'c' }}\r\n{% if true %}\r\nd{% endif %}", {}),
    ("{{- 'x' -}}   \n\n  {{- 'y' }}  \t{{ 'z' -}}\n", {}),
    ("\t{% set a = 1 %}\t\n{{ a }}", {}),
    ("  {{ 'not stripped' }}\n\t{% if true %}\n\tyes\n\t{%- endif %}\n  {#- c #}\nend {% if true %}  \n"
     "{% endif %}x", {}),
    # literals, printing (Python str/repr)
    ("{{ none }}|{{ true }}|{{ false }}|{{ 42 }}|{{ -7 }}|{{ 1.0 }}|{{ 2.5e-3 }}|{{ 1e20 }}|{{ 0.00001 }}|{{ 1_000 }}",
     {}),
    ("{{ [1, 'a', none, true, 1.5, {'k': 'v', 'n': [2]}] }}|{{ {'it\\'s': \"a\\\"b\", 'nl': 'c\\nd'} }}|{{ () }}",
     {}),
    ("{{ 'tab\\there' }}|{{ \"\\u00e9\\x41\\101\" }}|{{ 'adj' 'acent' }}|{{ \"it's\" }}", {}),
    ("{{ d.items() | list }}|{% for item in d | items %}{{ item }}{% endfor %}|{{ (1,) }}{{ (1, 'a') + (2,) }}|"
     "{{ (1, 2) == [1, 2] }}{{ (1, 2)[1:] }}{{ 'a'.startswith(('b', 'a')) }}", {"d": {"a": 1, "b": [2]}}),
    # operators
    ("{{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 3.0 // 2 }} "
     "{{ 1 + 2 * 3 - 4 }}", {}),
    ("{{ 'ab' * 2 }} {{ [1] * 3 }} {{ [1, 2] + [3] }} {{ 'a' ~ 1 ~ none ~ true ~ x }} {{ 'x' + 'y' }}", {"x": 2.5}),
    ("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' in 'cat' }} {{ 'x' not in ['x'] }} {{ 'k' in {'k': 1} }} {{ 1 == 1.0 }}"
     " {{ true == 1 }} {{ [1, [2]] == [1, [2]] }} {{ 'b' >= 'a' }} {{ none == none }}"
     " {{ undefined_name == none }}", {}),
    ("{{ 0 or 'x' }}|{{ 'a' and 'b' }}|{{ '' and 'b' }}|{{ not none }}|{{ not 1 is defined }}|{{ 'y' if 0 }}|"
     "{{ 'a' if false else 'b' if true else 'c' }}", {}),
    # variables, attributes, subscripts, slices
    ("{{ messages[0].role }} {{ messages[1]['content'] }} {{ messages[-1].content }} {{ messages[9] }}"
     "{{ messages[0].nope }}|{{ messages[1:3] | length }} {{ (messages[::-1] | first).content }}"
     " {{ messages[:-1][-1].role }}"
     " {{ messages[::2] | map(attribute='role') | join(',') }}", {"messages": MSGS}),
    ("{{ s[1:4] }}|{{ s[-3:] }}|{{ s[::-1] }}|{{ s[2] }}|{{ s | length }}|{{ s[10:] }}|{{ s[1:8:3] }}",
     {"s": "héllo wörld 🚀"}),
    # statements: for with loop variables, else, filter, break/continue, nested loops, set scoping, namespace
    ("{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/"
     "{{ loop.first }}/{{ loop.last }}/{{ loop.length }}/{{ loop.previtem.role if loop.previtem }};{% endfor %}",
     {"messages": MSGS}),
    ("{% for i in [] %}x{% else %}empty{% endfor %}|{% for i in [1, 2, 3, 4] if i != 2 %}{{ i }}{{ loop.length }}"
     "{% endfor %}|{% for i in range(10) %}{% if i == 4 %}{% break %}{% endif %}{% if i is odd %}{% continue %}"
     "{% endif %}{{ i }}{% endfor %}", {}),
    ("{% set x = 0 %}{% for i in [1, 2, 3] %}{{ x }}{% set x = x + i %}{{ x }},{% endfor %}{{ x }}|"
     "{% for i in [1, 2] %}{% if i > 1 %}{{ y }}{% endif %}{% set y = i %}{% endfor %}|"
     "{% set ns = namespace(a=1, found=false) %}{% for i in [1, 2] %}{% set ns.a = ns.a + i %}"
     "{% set ns.found = true %}{% endfor %}{{ ns.a }}{{ ns.found }}", {}),
    ("{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }}{% endfor %}{{ loop.index }} {% endfor %}"
     "{% for k, v in {'a': 1, 'b': 2} | items %}{{ k }}={{ v }};{% endfor %}"
     "{% for k, v in d.items() %}{{ k }}{{ v }}{% endfor %}{% for (a, b) in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}",
     {"d": {"z": 0, "y": 9}}),
    ("{% set a, b = [1, 2] %}{{ a }}{{ b }}|{% set t %}inner {{ a }}\n{% endset %}[{{ t }}]|{% set c = 1, 2 %}{{ c }}",
     {}),
    ("{% if x %}a{% elif y %}b{% else %}c{% endif %}{% if not x and not y %}d{% endif %}", {"y": [0]}),
    # filters
    ("{{ '  x y  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ none | trim }}|{{ 'abc' | upper }}{{ 'ABC' | lower }}"
     "{{ 'hello wORLD' | capitalize }}|{{ 'hello-big wORLD(x' | title }}|{{ 'a,b' | replace(',', ';') }}", {}),
    ("{{ nope | default('d') }}{{ '' | default('e') }}{{ '' | default('f', true) }}{{ none | d('g') }}"
     "{{ nope | length }}{{ [1, 2] | length }}{{ {'a': 1} | count }}{{ 'héllo' | length }}", {}),
    ("{{ [3, 1, 2] | first }}{{ [3, 1, 2] | last }}{{ [] | first }}{{ 'abc' | list }}{{ {'a': 1} | list }}"
     "{{ 42 | string }}{{ '12' | int + 1 }}{{ 'x' | int }}{{ 3.9 | int }}{{ '2.5' | float }}"
     "{{ [1, 2] | reverse | list }}"
     "{{ 'abc' | reverse }}{{ -3 | abs }}", {}),
    ("{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ x | tojson(sort_keys=true) }}|{{ 'é\"\\n\\u0001' | tojson }}"
     "|{{ 'é' | tojson(ensure_ascii=true) }}|{{ [1.5, none, true] | tojson(separators=[',', ':']) }}"
     "|{{ {} | tojson }}",
     {"x": {"b": [1, 2, {"c": "ü"}], "a": None, "t": True, "f": 0.5, "e": []}}),
    ("{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(' & ') }}|"
     "{{ messages | rejectattr('role', 'in', ['user', 'system']) | list | length }}|"
     "{{ [1, 2, 3, 4] | select('odd') | list }}{{ [1, 2, 3, 4] | reject('divisibleby', 2) | list }}|"
     "{{ [1, 2] | map('string') | join('-') }}|{{ messages | selectattr('content') | list | length }}",
     {"messages": MSGS}),
    # tests
    ("{{ x is defined }}{{ nope is defined }}{{ nope is undefined }}{{ none is none }}{{ 'a' is string }}"
     "{{ 1 is number }}{{ true is number }}{{ true is integer }}{{ 1 is integer }}{{ 1.0 is float }}"
     "{{ true is boolean }}{{ {} is mapping }}{{ [] is iterable }}{{ 'a' is iterable }}{{ nope is iterable }}"
     "{{ 'a' is sequence }}{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 'a' is equalto 'a' }}"
     "{{ 1 is in [1] }}{{ x is not none }}{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ false is sameas false }}"
     "{{ range is callable }}", {"x": 1}),
    # string methods and dict methods
    ("{{ ' x '.strip() }}|{{ 'xxax'.lstrip('x') }}|{{ 'a  '.rstrip() }}|{{ 'a,b,,c'.split(',') }}"
     "|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'abc'.startswith('a') }}{{ 'abc'.endswith(('x', 'c')) }}|"
     "{{ 'a-b'.replace('-', '+') }}|{{ '-'.join(['a', 'b']) }}|{{ 'Hi'.upper() }}{{ 'Hi'.lower() }}"
     "{{ 'hi you'.title() }}"
     "|{{ '<think>x</think>answer'.split('</think>')[-1].lstrip('\\n') }}|{{ 'abcb'.find('b') }}{{ 'abcb'.count('b') }}"
     "|{{ d.get('a') }}{{ d.get('z') }}{{ d.get('z', 3) }}{{ d.keys() | list }}{{ d.values() | list }}",
     {"d": {"a": 1, "b": 2}}),
    # globals: raise_exception, namespace, range, dict
    ("{{ range(3) | list }}{{ range(1, 7, 2) | list }}{{ dict(a=1, b='x') }}{{ namespace(a=1).a }}", {}),
    ("{% if messages | length > 1 %}{{ raise_exception('Too many: ' ~ messages | length) }}{% endif %}",
     {"messages": MSGS}),
    ("{{ nope.attr }}", {}),
    ("{{ 'a' + 1 }}", {}),
]


def gemma_tokenizer():
    tok = Tokenizer.from_file(str(FIXTURES / "tokenizers" / "llama2.tokenizer.json"))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>")])
    (OUT / "gemma.tokenizer.json").write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")


def write(name, obj):
    (OUT / f"{name}.json").write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    gemma_tokenizer()
    for name, (template, specials, tokenizer_file) in FAMILIES.items():
        write(name, family_fixture(name, template, specials, tokenizer_file))
    features = []
    for template, variables in FEATURES:
        messages = variables.pop("messages", [])
        features.append({"template": template, "variables": variables, "messages": messages,
                         **render(template, messages, False, variables)})
        variables["messages"] = messages
    write("features", {"transformers": transformers.__version__, "cases": features})


if __name__ == "__main__":
    main()
