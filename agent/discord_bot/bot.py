"""The discord.py client: turns gateway events and slash commands into `DiscordBrain` calls and posts the results.

Model work runs on a few threads (`run_in_executor`; on llama.cpp their decoding is batched), one message at a
time per channel, so the event loop keeps the gateway alive and channels answer side by side; persona replies
go out through a per-channel webhook named after the persona, or as plain bot messages without Manage Webhooks.
"""
from __future__ import annotations

import asyncio
import functools
import io
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import discord
from discord import app_commands

from ..models.engine import EngineError
from ..untrusted_text import without_lone_surrogates
from .brain import DiscordBrain, Incoming, Outgoing

log = logging.getLogger("personae.discord")

MODEL_THREADS = 8  # channels answered at once (each channel's messages are answered in order, one at a time)
AUDIO_TYPES = ("audio/",)  # voice messages are audio/ogg; any audio attachment is transcribed
MAX_AUDIO_BYTES = 25 * 1024 * 1024
NO_WEBHOOK = ("I can't post as the characters here because I'm missing the **Manage Webhooks** permission, "
              "so I'll answer as myself. Give my role Manage Webhooks in this channel to fix it.")


def reported(what: str, *args) -> str:
    """Logs the exception being handled, `what` (a %-format of `args`) and its traceback under a new error id;
    returns the short line for the channel, which shows the id and none of the exception's text."""
    error_id = secrets.token_hex(3)
    log.exception(what + " (error id %s)", *args, error_id)
    return f"Sorry, I couldn't answer that (error id {error_id})."


def intents() -> discord.Intents:
    """Guild and DM messages with their content (a privileged intent, enabled in the Developer Portal)."""
    chosen = discord.Intents.none()
    chosen.guilds = True
    chosen.guild_messages = True
    chosen.dm_messages = True
    chosen.message_content = True
    return chosen


class PersonaeBot(discord.Client):
    def __init__(self, brain: DiscordBrain, **options):
        super().__init__(intents=intents(), allowed_mentions=discord.AllowedMentions.none(), **options)
        self.brain = brain
        self.tree = app_commands.CommandTree(self)
        self.model_thread = ThreadPoolExecutor(max_workers=MODEL_THREADS, thread_name_prefix="personae-discord-model")
        self._channel_locks: dict[int, asyncio.Lock] = {}
        self._webhooks: dict[tuple[int, str], Optional[discord.Webhook]] = {}  # (parent channel, slug) -> hook
        self._own_webhook_ids: set[int] = set()
        self._told_no_webhook: set[int] = set()
        add_commands(self)

    async def setup_hook(self) -> None:
        try:
            await self.tree.sync()
        except discord.HTTPException as e:
            log.warning("could not register slash commands: %s", e)

    async def close(self) -> None:
        await super().close()
        self.model_thread.shutdown(wait=False, cancel_futures=True)

    async def run_model(self, fn: Callable, *args):
        """Runs blocking model work on a model thread; the event loop keeps serving Discord meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self.model_thread, fn, *args)

    def channel_lock(self, channel_id: int) -> asyncio.Lock:
        """Held while a channel's message or command is answered: its conversation takes one at a time, in order."""
        found = self._channel_locks.get(channel_id)
        if found is None:
            if len(self._channel_locks) > 1024:  # forget idle channels' locks
                self._channel_locks = {k: v for k, v in self._channel_locks.items() if v.locked()}
            found = self._channel_locks[channel_id] = asyncio.Lock()
        return found

    # -- messages --

    def incoming(self, message: discord.Message, audio: tuple = ()) -> Incoming:
        me = self.user
        reply_to = message.reference.resolved if message.reference else None
        reply_to_bot = isinstance(reply_to, discord.Message) and (
            (me is not None and reply_to.author.id == me.id) or reply_to.webhook_id in self._own_webhook_ids)
        text = without_lone_surrogates(message.content)  # JSON can spell "\\ud800": replaced, as a chat isn't bounced
        if me is not None:
            text = text.replace(f"<@{me.id}>", "").replace(f"<@!{me.id}>", "")
        return Incoming(channel_id=message.channel.id, author_id=message.author.id,
                        author_name=without_lone_surrogates(message.author.display_name), text=text.strip(),
                        is_dm=isinstance(message.channel, discord.DMChannel),
                        mentioned=me is not None and me in message.mentions, reply_to_bot=reply_to_bot,
                        from_bot=message.author.bot, from_webhook=message.webhook_id is not None, audio=audio)

    async def on_message(self, message: discord.Message) -> None:
        msg = self.incoming(message, audio=tuple((a.filename, b"") for a in audio_attachments(message)))
        if not self.brain.wants(msg):
            return
        try:
            limited = self.brain.over_rate(msg.author_id)
            if limited is not None:
                if limited:
                    await message.reply(limited, mention_author=False)
                return
            audio = tuple([(a.filename, await a.read()) for a in audio_attachments(message)])
            async with self.channel_lock(message.channel.id):
                replies = self.brain.replies(self.incoming(message, audio))  # a scene posts each line as it ends
                while True:
                    async with message.channel.typing():
                        out = await self.run_model(next, replies, None)
                    if out is None:
                        break
                    await self.post(message.channel, out)
        except discord.HTTPException as e:
            log.warning("Discord refused a request in channel %s: %s", message.channel.id, e)
        except EngineError as e:  # the LM engine (lm.url) failed: its address stays in the log, not the channel
            log.error("could not answer in channel %s: %s", message.channel.id, e)
            await self.say(message.channel, "Sorry, the language model is not answering right now; try again soon.")
        except Exception:  # noqa: BLE001 - one bad message must not take the bot down
            await self.say(message.channel, reported("could not answer a message in channel %s", message.channel.id))

    async def say(self, channel, text: str) -> None:
        try:
            await channel.send(text[:2000])
        except discord.HTTPException as e:
            log.warning("could not post in channel %s: %s", channel.id, e)

    # -- posting as the persona --

    async def webhook(self, channel, out: Outgoing) -> Optional[discord.Webhook]:
        """This persona's webhook in `channel` (a thread posts through its parent's), made on first use."""
        parent = channel.parent if isinstance(channel, discord.Thread) else channel
        if not isinstance(parent, (discord.TextChannel, discord.ForumChannel, discord.VoiceChannel)):
            return None
        name = f"personae {out.persona}"[:80]
        key = (parent.id, name)
        if key not in self._webhooks:
            try:
                found = [h for h in await parent.webhooks() if h.name == name and self.user and h.user
                         and h.user.id == self.user.id]
                avatar = out.avatar.read_bytes() if out.avatar and out.avatar.is_file() else None
                hook = found[0] if found else await parent.create_webhook(name=name, avatar=avatar,
                                                                          reason="personae persona replies")
            except discord.Forbidden:
                hook = None
            self._webhooks[key] = hook
            if hook is not None:
                self._own_webhook_ids.add(hook.id)
        return self._webhooks[key]

    async def post(self, channel, out: Outgoing) -> None:
        """Posts the notice, then the chunks (the audio with the last) as the persona, or as the bot."""
        if out.notice:
            await self.say(channel, out.notice)
        if not out.chunks:
            return
        hook = await self.webhook(channel, out)
        if hook is None and not isinstance(channel, discord.DMChannel) and channel.id not in self._told_no_webhook:
            self._told_no_webhook.add(channel.id)
            await self.say(channel, NO_WEBHOOK)
        for i, chunk in enumerate(out.chunks):
            last = i == len(out.chunks) - 1
            files = [discord.File(io.BytesIO(out.audio), filename=out.audio_name)] if last and out.audio else []
            try:
                if hook is not None:
                    thread = channel if isinstance(channel, discord.Thread) else discord.utils.MISSING
                    await hook.send(chunk, username=out.persona, files=files, thread=thread,
                                    allowed_mentions=discord.AllowedMentions.none())
                else:
                    prefix = f"**{out.persona}:** " if i == 0 and len(chunk) + len(out.persona) + 6 <= 2000 else ""
                    await channel.send(prefix + chunk, files=files)
            except discord.HTTPException as e:
                log.warning("could not post a reply in channel %s: %s", channel.id, e)
                return


def audio_attachments(message: discord.Message) -> list[discord.Attachment]:
    return [a for a in message.attachments
            if (a.content_type or "").startswith(AUDIO_TYPES) and a.size <= MAX_AUDIO_BYTES]


def add_commands(bot: PersonaeBot) -> None:
    """/persona set|list|info, /scene add|remove|list, /reset, /retry, /voice, /always, /remember, /forget,
    /memory; each is deferred before any model work."""
    brain, tree = bot.brain, bot.tree
    persona = app_commands.Group(name="persona", description="Choose or show the persona in this channel.")
    scene = app_commands.Group(name="scene", description="Several personas in this channel's conversation.")

    async def answer(interaction: discord.Interaction, fn: Callable, *args, ephemeral: bool = False) -> None:
        await interaction.response.defer(ephemeral=ephemeral, thinking=True)
        try:
            async with bot.channel_lock(interaction.channel_id):
                text = await bot.run_model(fn, *args)
        except (LookupError, ValueError) as e:
            text = str(e)
        except Exception:  # noqa: BLE001
            text = reported("a slash command failed in channel %s", interaction.channel_id)
        try:
            await interaction.followup.send(text[:2000], ephemeral=ephemeral)
        except discord.HTTPException as e:
            log.warning("could not answer a slash command: %s", e)

    @persona.command(name="set", description="Make NAME the persona that answers in this channel.")
    async def persona_set(interaction: discord.Interaction, name: str):
        await answer(interaction, brain.set_persona, interaction.channel_id, name)

    @persona.command(name="list", description="List the personas.")
    async def persona_list(interaction: discord.Interaction):
        await answer(interaction, brain.persona_list, ephemeral=True)

    @persona.command(name="create", description="Write a new persona from a one-line idea (server admins only).")
    async def persona_create(interaction: discord.Interaction, idea: app_commands.Range[str, 1, 400],
                             name: Optional[app_commands.Range[str, 1, 60]] = None):
        is_admin = interaction.guild_id is not None and interaction.permissions.administrator  # DMs have no admins
        await answer(interaction, functools.partial(brain.create_persona, is_admin=is_admin), idea, name)

    @persona.command(name="info", description="Who answers in this channel, and how.")
    async def persona_info(interaction: discord.Interaction):
        await answer(interaction, brain.persona_info, interaction.channel_id, ephemeral=True)

    @scene.command(name="add", description="NAME joins this channel's conversation (a group scene).")
    async def scene_add(interaction: discord.Interaction, name: str):
        await answer(interaction, brain.scene_add, interaction.channel_id, name, interaction.user.display_name)

    @scene.command(name="remove", description="NAME leaves this channel's group scene.")
    async def scene_remove(interaction: discord.Interaction, name: str):
        await answer(interaction, brain.scene_remove, interaction.channel_id, name)

    @scene.command(name="list", description="Who is in this channel's group scene.")
    async def scene_list(interaction: discord.Interaction):
        await answer(interaction, brain.scene_list, interaction.channel_id, ephemeral=True)

    async def post_from_command(interaction: discord.Interaction, fn: Callable, *args, done: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            async with bot.channel_lock(interaction.channel_id):
                out = await bot.run_model(fn, *args)
            text = done
        except (LookupError, ValueError) as e:
            out, text = None, str(e)
        try:
            if out is not None:
                channel = interaction.channel
                if channel is None or not hasattr(channel, "send"):  # a partial channel: look it up
                    channel = bot.get_channel(interaction.channel_id) or await bot.fetch_channel(interaction.channel_id)
                await bot.post(channel, out)
            await interaction.followup.send(text, ephemeral=True)
        except discord.HTTPException as e:
            log.warning("could not answer a slash command: %s", e)

    @tree.command(name="reset", description="Start a new conversation in this channel.")
    async def reset(interaction: discord.Interaction):
        await post_from_command(interaction, brain.reset, interaction.channel_id, interaction.user.display_name,
                                done="Started a new conversation.")

    @tree.command(name="retry", description="Write the last reply again.")
    async def retry(interaction: discord.Interaction):
        limited = brain.over_rate(interaction.user.id)
        if limited is not None:
            await interaction.response.send_message(limited or "Slow down a little.", ephemeral=True)
            return
        await post_from_command(interaction, brain.retry, interaction.channel_id, done="Wrote the last reply again.")

    @tree.command(name="voice", description="Also send replies as voice clips in this channel.")
    @app_commands.choices(mode=[app_commands.Choice(name="on", value="on"), app_commands.Choice(name="off", value="off")])
    async def voice(interaction: discord.Interaction, mode: app_commands.Choice[str]):
        await answer(interaction, brain.set_voice, interaction.channel_id, mode.value == "on")

    @tree.command(name="always", description="Answer every message in this channel, not only mentions.")
    @app_commands.choices(mode=[app_commands.Choice(name="on", value="on"), app_commands.Choice(name="off", value="off")])
    @app_commands.default_permissions(manage_channels=True)
    async def always(interaction: discord.Interaction, mode: app_commands.Choice[str]):
        await answer(interaction, brain.set_always, interaction.channel_id, mode.value == "on")

    @tree.command(name="remember", description="Keep a note for the rest of this channel's conversation.")
    async def remember(interaction: discord.Interaction, text: str):
        await answer(interaction, brain.remember, interaction.channel_id, text, ephemeral=True)

    @tree.command(name="forget", description="Drop the newest note, memory number N (see /memory), or 'all'.")
    async def forget(interaction: discord.Interaction, what: Optional[str] = None):
        await answer(interaction, brain.forget, interaction.channel_id, what, ephemeral=True)

    @tree.command(name="memory", description="Show the summary, notes and what the last reply recalled.")
    async def memory(interaction: discord.Interaction):
        await answer(interaction, brain.memory, interaction.channel_id, ephemeral=True)

    tree.add_command(persona)
    tree.add_command(scene)
